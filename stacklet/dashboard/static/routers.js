// Routers: list, create, set or clear the external gateway, add or remove interfaces, delete.

import {api, neutron} from "./api.js";
import {byId, externalNetworks, networkName, state, subnetLabel} from "./model.js";
import {$, act, clear, deleteButton, fillSelect, formValues, h, hiddenLabel} from "./ui.js";

let refresh = async () => {};

const routerUrl = (id, action) => neutron(`routers/${id}${action ? "/" + action : ""}`);

export function setup(reload) {
  refresh = reload;
  $("router-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const v = formValues(form);
    const body = {router: {name: v.name, admin_state_up: true}};
    if (v.external_network) body.router.external_gateway_info = {network_id: v.external_network};
    const done = await act(`Create router ${v.name}`, () => api("POST", neutron("routers"), body));
    if (done) {
      form.reset();
      await refresh();
    }
  });
}

function externalOptions() {
  return externalNetworks().map((n) => [n.id, n.name || n.id]);
}

function gatewayCell(router) {
  const gw = router.external_gateway_info;
  const selectId = `router-gw-${router.id}`;
  const select = h("select", {id: selectId});
  fillSelect(select, externalOptions(), "choose an external network");
  const text = gw && gw.network_id
    ? `${networkName(gw.network_id)} ${(gw.external_fixed_ips || []).map((ip) => ip.ip_address)
      .join(", ")}${gw.enable_snat === false ? " (no SNAT)" : ""}`
    : "none";
  return h("td", {},
    h("span", {class: "gateway"}, text), h("br"),
    hiddenLabel(selectId, `External network for router ${router.name}`), select, " ",
    h("button", {type: "button", id: `router-gw-set-${router.id}`, onclick: async () => {
      if (!select.value) return;
      const done = await act(`Set gateway of router ${router.name}`, () =>
        api("PUT", routerUrl(router.id), {router: {external_gateway_info: {
          network_id: select.value}}}));
      if (done) await refresh();
    }}, "Set gateway"), " ",
    gw && gw.network_id ? h("button", {type: "button", id: `router-gw-clear-${router.id}`,
      onclick: async () => {
        const done = await act(`Clear gateway of router ${router.name}`, () =>
          api("PUT", routerUrl(router.id), {router: {external_gateway_info: {}}}));
        if (done) await refresh();
      }}, "Clear gateway") : null);
}

function interfacesCell(router) {
  const ports = state.ports.filter((p) => p.device_id === router.id &&
    (p.device_owner || "").startsWith("network:router_interface"));
  const list = h("ul", {class: "plain"});
  for (const port of ports) {
    const fixed = (port.fixed_ips || [])[0] || {};
    const subnet = byId(state.subnets, fixed.subnet_id);
    list.append(h("li", {"data-port": port.id},
      `${networkName(port.network_id)} ${subnet ? subnet.cidr : ""} ${fixed.ip_address || ""} `,
      h("button", {type: "button", id: `router-if-remove-${port.id}`,
                   "aria-label": `Remove interface ${fixed.ip_address || port.id} from router ` +
                     `${router.name}`, onclick: async () => {
        const done = await act(`Remove interface from router ${router.name}`, () =>
          api("PUT", routerUrl(router.id, "remove_router_interface"), {port_id: port.id}));
        if (done) await refresh();
      }}, "Remove")));
  }
  const selectId = `router-if-subnet-${router.id}`;
  const select = h("select", {id: selectId});
  const attached = new Set(ports.flatMap((p) => (p.fixed_ips || []).map((ip) => ip.subnet_id)));
  fillSelect(select, state.subnets.filter((sn) => !attached.has(sn.id))
    .map((sn) => [sn.id, `${networkName(sn.network_id)}: ${subnetLabel(sn)}`]), "choose a subnet");
  return h("td", {}, list,
    hiddenLabel(selectId, `Subnet to attach to router ${router.name}`), select, " ",
    h("button", {type: "button", id: `router-if-add-${router.id}`, onclick: async () => {
      if (!select.value) return;
      const done = await act(`Add interface to router ${router.name}`, () =>
        api("PUT", routerUrl(router.id, "add_router_interface"), {subnet_id: select.value}));
      if (done) await refresh();
    }}, "Add interface"));
}

export function render() {
  fillSelect($("router-create-external"), externalOptions(), "none");
  const body = clear($("routers-body"));
  for (const router of state.routers) {
    body.append(h("tr", {"data-id": router.id},
      h("td", {}, router.name || "(no name)", h("br"), h("span", {class: "mono"}, router.id)),
      h("td", {}, router.status),
      gatewayCell(router),
      interfacesCell(router),
      h("td", {}, deleteButton("router", router.name || router.id, () =>
        act(`Delete router ${router.name}`, () => api("DELETE", routerUrl(router.id)))
          .then(refresh), `router-delete-${router.id}`))));
  }
  if (!state.routers.length) body.append(h("tr", {}, h("td", {colspan: 5}, "No routers.")));
}
