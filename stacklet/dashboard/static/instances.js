// Instances. Until the compute service exists, a port whose device_owner is "compute:*" stands
// for an instance (its device_id is the instance's id): this page lists such ports and creates
// one on a network. It boots nothing.

import {api, neutron} from "./api.js";
import {isInstancePort, networkName, state} from "./model.js";
import {$, act, clear, deleteButton, fillSelect, formValues, h} from "./ui.js";

let refresh = async () => {};

function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((n) => n.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export function setup(reload) {
  refresh = reload;
  $("instance-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const v = formValues(form);
    const port = {name: v.name, network_id: v.network_id, device_owner: "compute:nova",
                  device_id: uuid(), admin_state_up: true};
    const done = await act(`Create instance port ${v.name}`, () =>
      api("POST", neutron("ports"), {port}));
    if (done) {
      form.reset();
      await refresh();
    }
  });
}

export function render() {
  fillSelect($("instance-create-network"), state.networks.map((n) =>
    [n.id, `${n.name || n.id}${n["router:external"] ? " (external)" : ""}`]));
  const body = clear($("instances-body"));
  const ports = state.ports.filter(isInstancePort);
  for (const port of ports) {
    const fips = state.floatingips.filter((f) => f.port_id === port.id)
      .map((f) => f.floating_ip_address);
    body.append(h("tr", {"data-id": port.id, "data-device": port.device_id},
      h("td", {}, port.name || "(no name)"),
      h("td", {class: "mono"}, port.device_id),
      h("td", {class: "mono"}, port.id),
      h("td", {}, networkName(port.network_id)),
      h("td", {}, (port.fixed_ips || []).map((ip) => ip.ip_address).join(", ")),
      h("td", {}, fips.join(", ") || "—"),
      h("td", {}, port["binding:host_id"] || "—"),
      h("td", {}, port.status),
      h("td", {}, deleteButton("instance port", port.name || port.id, () =>
        act(`Delete instance port ${port.name}`,
          () => api("DELETE", neutron(`ports/${port.id}`))).then(refresh),
      `instance-delete-${port.id}`))));
  }
  if (!ports.length) body.append(h("tr", {}, h("td", {colspan: 9}, "No instances.")));
}
