// Networks: list, create (with a subnet when a CIDR is given), delete.

import {api, neutron} from "./api.js";
import {isExternal, state, subnetLabel} from "./model.js";
import {$, act, clear, deleteButton, formValues, h} from "./ui.js";

let refresh = async () => {};

export function setup(reload) {
  refresh = reload;
  $("network-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const v = formValues(form);
    const done = await act(`Create network ${v.name}`, async () => {
      const body = {network: {name: v.name, admin_state_up: true}};
      if (v.external) body.network["router:external"] = true;
      const {network} = await api("POST", neutron("networks"), body);
      if (v.cidr) {
        const subnet = {network_id: network.id, cidr: v.cidr, name: v.subnet_name || `${v.name}-subnet`,
                        ip_version: v.cidr.includes(":") ? 6 : 4, enable_dhcp: v.enable_dhcp};
        if (v.gateway_ip) subnet.gateway_ip = v.gateway_ip;
        try {
          await api("POST", neutron("subnets"), {subnet});
        } catch (err) {
          // nothing half-created: the network goes when its subnet cannot be made
          await api("DELETE", neutron(`networks/${network.id}`)).catch(() => {});
          throw err;
        }
      }
      return network;
    });
    if (done) {
      form.reset();
      await refresh();
    }
  });
}

export function render() {
  const body = clear($("networks-body"));
  for (const net of state.networks) {
    const subnets = state.subnets.filter((sn) => sn.network_id === net.id);
    const flags = [isExternal(net) ? "external" : "", net.shared ? "shared" : ""]
      .filter(Boolean).join(", ");
    body.append(h("tr", {"data-id": net.id},
      h("td", {}, net.name || "(no name)"),
      h("td", {class: "mono"}, net.id),
      h("td", {}, subnets.map(subnetLabel).join(", ") || "—"),
      h("td", {}, flags || "—"),
      h("td", {}, net.status),
      h("td", {}, deleteButton("network", net.name || net.id, () =>
        act(`Delete network ${net.name}`, async () => {
          await api("DELETE", neutron(`networks/${net.id}`));
        }).then(refresh), `network-delete-${net.id}`))));
  }
  if (!state.networks.length) body.append(h("tr", {}, h("td", {colspan: 6}, "No networks.")));
}
