// What the pages and the graph show, read from the Neutron API lists (what the logged-in
// user may see). One load fetches the collections in parallel.

import {api, neutron} from "./api.js";

export const state = {
  networks: [], subnets: [], routers: [], ports: [], floatingips: [], security_groups: [],
  loaded: false,
};

const COLLECTIONS = {
  networks: "networks", subnets: "subnets", routers: "routers", ports: "ports",
  floatingips: "floatingips", security_groups: "security-groups",
};

export async function load(which = Object.keys(COLLECTIONS)) {
  const answers = await Promise.all(
    which.map((key) => api("GET", neutron(COLLECTIONS[key]))));
  which.forEach((key, i) => { state[key] = answers[i][key] || []; });
  state.loaded = true;
  return state;
}

export function byId(list, id) {
  return list.find((item) => item.id === id);
}

export function isExternal(network) {
  return Boolean(network && network["router:external"]);
}

export function externalNetworks() {
  return state.networks.filter(isExternal);
}

export function networkName(id) {
  const network = byId(state.networks, id);
  return network ? (network.name || network.id.slice(0, 8)) : (id || "").slice(0, 8);
}

export function subnetLabel(subnet) {
  return `${subnet.name ? subnet.name + " " : ""}${subnet.cidr}`;
}

// Ports standing for instances until the compute service exists: device_owner "compute:*".
export function isInstancePort(port) {
  return (port.device_owner || "").startsWith("compute:");
}

export function isRouterPort(port) {
  const owner = port.device_owner || "";
  return owner.startsWith("network:router_interface") || owner === "network:router_gateway" ||
    owner === "network:ha_router_replicated_interface";
}

export function portLabel(port) {
  const ips = (port.fixed_ips || []).map((ip) => ip.ip_address).join(", ");
  return `${port.name || port.id.slice(0, 8)}${ips ? " (" + ips + ")" : ""}`;
}
