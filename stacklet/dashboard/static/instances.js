// Instances: the servers of the Compute API (an admin sees every project's, with their host),
// launched from an image, a flavor, a network and optionally a key pair; deleted.

import {isAdmin, novaApi} from "./api.js";
import {addressesText, byId, state} from "./model.js";
import {$, act, clear, deleteButton, fillSelect, formValues, h} from "./ui.js";

let refresh = async () => {};

export function setup(reload) {
  refresh = reload;
  $("instance-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const v = formValues(form);
    const server = {name: v.name, imageRef: v.image, flavorRef: v.flavor,
                    networks: [{uuid: v.network_id}]};
    if (v.key_name) server.key_name = v.key_name;
    const done = await act(`Launch instance ${v.name}`, () =>
      novaApi("POST", "servers", {server}));
    if (done) {
      form.reset();
      await refresh();
    }
  });
}

function imageName(server) {
  const id = server.image && server.image.id;
  if (!id) return "(no image)";
  const image = byId(state.images, id);
  return image ? (image.name || id) : id.slice(0, 8);
}

function flavorName(server) {
  const flavor = server.flavor || {};
  return flavor.original_name || flavor.id || "";
}

export function render() {
  fillSelect($("instance-create-image"), state.images.filter((i) => i.status === "active")
    .map((i) => [i.id, i.name || i.id]));
  fillSelect($("instance-create-flavor"), state.flavors.map((f) => [f.id, f.name]));
  fillSelect($("instance-create-network"), state.networks.filter((n) => !n["router:external"])
    .map((n) => [n.id, n.name || n.id]));
  fillSelect($("instance-create-key"), state.keypairs.map((k) => [k.name, k.name]), "(none)");
  const admin = isAdmin();
  $("instances-host-col").hidden = !admin;
  const body = clear($("instances-body"));
  const servers = [...state.servers].sort((a, b) => (a.name || "").localeCompare(b.name || ""));
  for (const server of servers) {
    const fault = server.fault && server.fault.message;
    body.append(h("tr", {"data-id": server.id, "data-status": server.status},
      h("td", {}, server.name || "(no name)"),
      h("td", {class: "status", title: fault || undefined},
        server.status + (server["OS-EXT-STS:task_state"]
          ? ` (${server["OS-EXT-STS:task_state"]})` : ""), fault ? `: ${fault}` : ""),
      h("td", {}, addressesText(server) || "—"),
      h("td", {}, flavorName(server)),
      h("td", {}, imageName(server)),
      admin ? h("td", {}, server["OS-EXT-SRV-ATTR:host"] || "—") : null,
      h("td", {}, deleteButton("instance", server.name || server.id, () =>
        act(`Delete instance ${server.name}`,
          () => novaApi("DELETE", `servers/${server.id}`)).then(refresh),
      `instance-delete-${server.id}`))));
  }
  if (!servers.length) {
    body.append(h("tr", {}, h("td", {colspan: admin ? 7 : 6}, "No instances.")));
  }
}
