// What the pages and the graph show, read from the Neutron, Compute and Image API lists (what
// the logged-in user may see). One load fetches the collections in parallel.

import {api, isAdmin, neutron, novaApi} from "./api.js";

export const state = {
  networks: [], subnets: [], routers: [], ports: [], floatingips: [], security_groups: [],
  servers: [], images: [], flavors: [], keypairs: [],
  loaded: false,
};

// key → how to read it (the list is under the same key in the answer)
const COLLECTIONS = {
  networks: () => api("GET", neutron("networks")),
  subnets: () => api("GET", neutron("subnets")),
  routers: () => api("GET", neutron("routers")),
  ports: () => api("GET", neutron("ports")),
  floatingips: () => api("GET", neutron("floatingips")),
  security_groups: () => api("GET", neutron("security-groups")),
  // an admin sees every project's servers, as it sees every project's ports
  servers: () => novaApi("GET", `servers/detail${isAdmin() ? "?all_tenants=1" : ""}`),
  images: () => api("GET", "/image/v2/images?limit=1000"),
  flavors: () => novaApi("GET", "flavors"),
  keypairs: async () => ({keypairs: ((await novaApi("GET", "os-keypairs")).keypairs || [])
    .map((k) => k.keypair)}),
};

// what the graph needs (polled)
export const GRAPH = ["networks", "subnets", "routers", "ports", "floatingips", "servers"];

export async function load(which = Object.keys(COLLECTIONS)) {
  const answers = await Promise.all(which.map((key) => COLLECTIONS[key]()));
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

// A server's ports have device_owner "compute:<zone>" and its id as device_id.
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

export function serverOf(port) {
  return port && port.device_id ? byId(state.servers, port.device_id) : undefined;
}

// "net-a: 10.0.0.3, 203.0.113.7; net-b: …" from a server's addresses
export function addressesText(server) {
  return Object.entries(server.addresses || {}).map(([net, addrs]) =>
    `${net}: ${addrs.map((a) => a.addr).join(", ")}`).join("; ");
}

// a server in transition (its row changes by itself)
export function settling(server) {
  return server.status === "BUILD" || Boolean(server["OS-EXT-STS:task_state"]);
}
