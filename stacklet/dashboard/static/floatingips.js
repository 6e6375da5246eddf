// Floating IPs: list, allocate from an external network, associate to a port, disassociate,
// release.

import {api, neutron} from "./api.js";
import {byId, externalNetworks, networkName, portLabel, state} from "./model.js";
import {$, act, clear, deleteButton, fillSelect, formValues, h, hiddenLabel} from "./ui.js";

let refresh = async () => {};

export function setup(reload) {
  refresh = reload;
  $("fip-allocate").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.currentTarget);
    const done = await act("Allocate floating IP", () =>
      api("POST", neutron("floatingips"), {floatingip: {
        floating_network_id: v.floating_network_id}}));
    if (done) await refresh();
  });
}

// Ports a floating IP may point at: those of instances and other non-network devices.
function candidatePorts() {
  return state.ports.filter((p) => !(p.device_owner || "").startsWith("network:") &&
    (p.fixed_ips || []).some((ip) => !ip.ip_address.includes(":")));
}

function put(fip, port) {
  return api("PUT", neutron(`floatingips/${fip.id}`), {floatingip: {port_id: port}});
}

export function render() {
  fillSelect($("fip-allocate-network"),
    externalNetworks().map((n) => [n.id, n.name || n.id]));
  const body = clear($("fips-body"));
  for (const fip of state.floatingips) {
    const port = fip.port_id && byId(state.ports, fip.port_id);
    const selectId = `fip-port-${fip.id}`;
    const select = h("select", {id: selectId});
    fillSelect(select, candidatePorts().map((p) => [p.id, portLabel(p)]), "choose a port");
    body.append(h("tr", {"data-id": fip.id},
      h("td", {}, fip.floating_ip_address),
      h("td", {}, networkName(fip.floating_network_id)),
      h("td", {}, fip.fixed_ip_address || "—"),
      h("td", {}, port ? portLabel(port) : (fip.port_id || "—")),
      h("td", {}, fip.status),
      h("td", {},
        hiddenLabel(selectId, `Port for floating IP ${fip.floating_ip_address}`), select, " ",
        h("button", {type: "button", id: `fip-associate-${fip.id}`, onclick: async () => {
          if (!select.value) return;
          const done = await act(`Associate ${fip.floating_ip_address}`,
            () => put(fip, select.value));
          if (done) await refresh();
        }}, "Associate"), " ",
        fip.port_id ? h("button", {type: "button", id: `fip-disassociate-${fip.id}`,
          onclick: async () => {
            const done = await act(`Disassociate ${fip.floating_ip_address}`,
              () => put(fip, null));
            if (done) await refresh();
          }}, "Disassociate") : null, " ",
        deleteButton("floating IP", fip.floating_ip_address, () =>
          act(`Release ${fip.floating_ip_address}`,
            () => api("DELETE", neutron(`floatingips/${fip.id}`))).then(refresh),
        `fip-release-${fip.id}`))));
  }
  if (!state.floatingips.length) {
    body.append(h("tr", {}, h("td", {colspan: 6}, "No floating IPs.")));
  }
}
