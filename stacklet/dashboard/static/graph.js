// The network topology as SVG, in the manner of Horizon's: every network a vertical bar
// (external networks first, drawn apart), routers and instances as boxes between them, one
// line per port from a box to the bar of its network, floating IPs as dashed lines to their
// external network. Every drawn thing carries data-kind and data-id (the resource's id), so a
// trace's path can be highlighted on it.

import {clear, s} from "./ui.js";
import {isExternal, isInstancePort, isRouterPort} from "./model.js";

const LEFT = 90;        // x of the first bar
const COL = 300;        // distance between bars
const TOP = 56;         // y where bars begin
const BOX_W = 120;
const BOX_AT = 110;     // a box's left edge, right of the bar of its first network
const GAP = 28;         // between a row's box and the next one
const LINK = 16;        // vertical distance between a box's lines

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

function ips(port) {
  return (port.fixed_ips || []).map((ip) => ip.ip_address);
}

// The boxes to draw: routers, then instances (servers, with their compute ports), each with
// the lines (links) it has to networks.
function devices(state) {
  const rows = [];
  const routerPorts = state.ports.filter(isRouterPort);
  for (const router of [...state.routers].sort((a, b) => (a.name || "").localeCompare(b.name))) {
    const links = routerPorts.filter((p) => p.device_id === router.id).map((port) => ({
      kind: "port", id: port.id, network: port.network_id, label: ips(port).join(", "),
      gateway: port.device_owner === "network:router_gateway",
    }));
    const gw = router.external_gateway_info;
    if (gw && gw.network_id && !links.some((l) => l.gateway)) {
      // a member does not see the gateway port (it belongs to no project): the router says
      const addresses = (gw.external_fixed_ips || []).map((ip) => ip.ip_address).join(", ");
      links.unshift({kind: "gateway", id: null, network: gw.network_id, label: addresses,
                     gateway: true, router: router.id});
    }
    rows.push({kind: "router", id: router.id, name: router.name || router.id.slice(0, 8),
               title: `router ${router.name} (${router.id}) ${router.status}`,
               status: router.status, links, fips: []});
  }
  // instances: the servers (by name), each with its ports; a compute port whose server this
  // user cannot list stands for an instance of its own (its device id)
  const instances = new Map();
  const servers = new Map((state.servers || []).map((server) => [server.id, server]));
  const box = (key, port) => {
    const server = servers.get(key);
    if (server) {
      return {kind: "instance", id: key, name: server.name || key.slice(0, 8),
              title: `instance ${server.name} (${key}) ${server.status}`,
              host: server["OS-EXT-SRV-ATTR:host"] || (port && port["binding:host_id"]) || "",
              status: server.status, server: true, links: [], fips: []};
    }
    return {kind: "instance", id: key, name: port.name || key.slice(0, 8),
            title: `instance ${key} (a port with a compute device owner)`,
            host: port["binding:host_id"] || "", status: port.status, links: [], fips: []};
  };
  for (const port of state.ports.filter(isInstancePort)) {
    const key = port.device_id || port.id;
    if (!instances.has(key)) instances.set(key, box(key, port));
    const row = instances.get(key);
    row.links.push({kind: "port", id: port.id, network: port.network_id,
                    label: ips(port).join(", "), status: port.status});
    for (const fip of state.floatingips.filter((f) => f.port_id === port.id)) {
      row.fips.push({id: fip.id, network: fip.floating_network_id,
                     label: fip.floating_ip_address, port: port.id});
    }
  }
  for (const id of servers.keys()) {
    if (!instances.has(id)) instances.set(id, box(id));    // no port (yet)
  }
  const sorted = [...instances.values()].sort((a, b) => a.name.localeCompare(b.name));
  return rows.concat(sorted);
}

function networkOrder(state) {
  const rank = (n) => (isExternal(n) ? 0 : 1);
  return [...state.networks].sort((a, b) => rank(a) - rank(b) ||
    (a.name || "").localeCompare(b.name || "") || a.id.localeCompare(b.id));
}

export function drawTopology(svg, state) {
  clear(svg);
  const nets = networkOrder(state);
  const column = new Map(nets.map((n, i) => [n.id, i]));
  const barX = (i) => LEFT + i * COL;
  const rows = devices(state);
  const extraColumn = rows.some((r) => !r.links.some((l) => column.has(l.network)));

  // rows: y and height
  let y = TOP + 24;
  for (const row of rows) {
    const lines = row.links.length + row.fips.length;
    row.height = Math.max(row.host ? 54 : 44, 22 + lines * LINK);
    row.y = y;
    y += row.height + GAP;
  }
  const height = Math.max(y + 10, 220);
  const width = LEFT + Math.max(nets.length - 1, 0) * COL + (extraColumn ? COL : 0) + BOX_AT +
    BOX_W + 90;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);

  const subnetsOf = (net) => state.subnets.filter((sn) => sn.network_id === net.id);
  const barLayer = s("g", {class: "bars"});
  const linkLayer = s("g", {class: "links"});
  const boxLayer = s("g", {class: "boxes"});
  svg.append(barLayer, linkLayer, boxLayer);

  nets.forEach((net, i) => {
    const x = barX(i);
    const external = isExternal(net);
    const cidrs = subnetsOf(net).map((sn) => sn.cidr);
    const classes = ["net", external ? "external" : "", net.shared ? "shared" : ""];
    barLayer.append(s("g", {
      class: classes.filter(Boolean).join(" "), id: `topo-net-${net.id}`,
      "data-kind": "network", "data-id": net.id, "data-external": String(external)},
      s("title", {}, `${external ? "external " : ""}network ${net.name} (${net.id}) ` +
        `${cidrs.join(" ")}`),
      s("rect", {x: x - 8, y: TOP, width: 16, height: height - TOP - 8, rx: 4, class: "bar"}),
      s("text", {x, y: 18, class: "net-name", "text-anchor": "middle"},
        clip(net.name || net.id.slice(0, 8), 22)),
      s("text", {x, y: 34, class: "net-cidr", "text-anchor": "middle"},
        clip(cidrs.join(" ") || "no subnet", 26)),
      external ? s("text", {x, y: 48, class: "net-tag", "text-anchor": "middle"}, "external")
        : null));
  });

  for (const row of rows) {
    const attached = row.links.map((l) => column.get(l.network)).filter((c) => c !== undefined);
    const home = attached.length ? Math.min(...attached) : nets.length;
    const boxLeft = (attached.length ? barX(home) : barX(Math.max(nets.length - 1, 0)) + COL / 2)
      + (attached.length ? BOX_AT : 0);
    const boxRight = boxLeft + BOX_W;
    let lineY = row.y + 26;
    for (const link of row.links) {
      const col = column.get(link.network);
      if (col === undefined) {
        lineY += LINK;
        continue;   // a network this user cannot see
      }
      const x = barX(col);
      const fromX = x < boxLeft ? boxLeft : boxRight;
      const labelX = x < boxLeft ? boxLeft - 6 : boxRight + 6;
      const attrs = link.kind === "port"
        ? {"data-kind": "port", "data-id": link.id, id: `topo-port-${link.id}`}
        : {"data-kind": "gateway", id: `topo-gw-${link.router}`};
      linkLayer.append(s("g", {
        class: `link${link.gateway ? " gateway" : ""}`, "data-network": link.network,
        "data-device": row.id, ...attrs},
        s("title", {}, `${link.gateway ? "gateway" : "port"} ${link.id || ""} ${link.label}`),
        s("line", {x1: fromX, y1: lineY, x2: x, y2: lineY}),
        s("circle", {cx: x, cy: lineY, r: 4}),
        s("text", {x: labelX, y: lineY - 4, class: "ip",
                   "text-anchor": x < boxLeft ? "end" : "start"}, link.label)));
      lineY += LINK;
    }
    for (const fip of row.fips) {
      const col = column.get(fip.network);
      if (col === undefined) continue;
      const x = barX(col);
      linkLayer.append(s("g", {
        class: "fip", id: `topo-fip-${fip.id}`, "data-kind": "floatingip", "data-id": fip.id,
        "data-port": fip.port, "data-network": fip.network, "data-device": row.id},
        s("title", {}, `floating IP ${fip.label} (${fip.id})`),
        s("line", {x1: x < boxLeft ? boxLeft : boxRight, y1: lineY, x2: x, y2: lineY}),
        s("circle", {cx: x, cy: lineY, r: 4}),
        s("text", {x: x < boxLeft ? x + 12 : x - 12, y: lineY - 4, class: "ip",
                   "text-anchor": x < boxLeft ? "start" : "end"}, `floating IP ${fip.label}`)));
      lineY += LINK;
    }
    boxLayer.append(s("g", {
      class: `device ${row.kind}`, id: `topo-${row.kind}-${row.id}`, "data-kind": row.kind,
      "data-id": row.id, "data-status": row.status || ""},
      s("title", {}, row.title),
      s("rect", {x: boxLeft, y: row.y, width: BOX_W, height: row.height, rx: 6}),
      s("text", {x: boxLeft + 8, y: row.y + 16, class: "device-kind"}, row.kind),
      s("text", {x: boxLeft + 8, y: row.y + 32, class: "device-name"}, clip(row.name, 17)),
      row.host ? s("text", {x: boxLeft + 8, y: row.y + 46, class: "device-host"},
        clip(`on ${row.host}`, 19)) : null));
  }
  svg.setAttribute("aria-label", `Network topology: ${nets.length} networks, ` +
    `${state.routers.length} routers, ${rows.length - state.routers.length} instances`);
}

// Marks the elements of a trace's path (ids of ports, networks, routers, floating IPs); the
// element of path[current] is the current hop. A port lights its instance's box too.
export function highlight(svg, path, current) {
  for (const el of svg.querySelectorAll(".on-path, .current")) {
    el.classList.remove("on-path", "current");
    el.removeAttribute("data-step");
  }
  (path || []).forEach((id, i) => {
    if (current !== undefined && i > current) return;
    for (const el of svg.querySelectorAll(`[data-id="${CSS.escape(id)}"]`)) {
      el.classList.add("on-path");
      el.setAttribute("data-step", String(i + 1));
      if (i === current) el.classList.add("current");
      const device = el.getAttribute("data-kind") === "port" && el.getAttribute("data-device");
      if (device) {
        for (const box of svg.querySelectorAll(`.device[data-id="${CSS.escape(device)}"]`)) {
          box.classList.add("on-path");
        }
      }
    }
  });
}
