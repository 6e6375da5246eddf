"""The Image API (Glance v2) with the real `openstack` CLI and openstacksdk: create with data,
list, show, set/unset, save, delete; checksums; visibility and members across projects;
deactivation; Glance's errors; nothing half-created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imgutil import call, create, glance_error, hashes, patch, qcow2_bytes, upload, write_file
from netutil import osc

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def alice(cloud):
    return cloud.new_project()


@pytest.fixture(scope="module")
def bob(cloud):
    return cloud.new_project()


def _images_dir(cloud) -> Path:
    return cloud.data_dir / "images"


def _list_names(target, *extra: str) -> set[str]:
    return {i["Name"] for i in target.openstack("image", "list", *extra, "-f", "json").json()}


def test_cli_create_show_set_unset_save_delete(cloud, alice, tmp_path, unique_name):
    source = write_file(tmp_path / "disk.qcow2", qcow2_bytes(5 * 1024**3, length=3 * MIB))
    md5, sha512 = hashes(source)
    name = unique_name("img")
    # one CLI process per batch of commands (netutil.osc)
    created, listed = osc(alice, [
        "image", "create", "--file", str(source), "--disk-format", "qcow2",
        "--container-format", "bare", "--min-disk", "2", "--tag", "debian",
        "--property", "hw_vif_model=e1000", "--property", "hw_disk_bus=sata",
        "--property", "os_type=linux", name, "-f", "json"], ["image", "list", "-f", "json"])
    image_id = created["id"]
    assert created["status"] == "active"
    assert created["size"] == 3 * MIB
    assert created["checksum"] == md5
    assert created["disk_format"] == "qcow2" and created["container_format"] == "bare"
    assert created["visibility"] == "shared"          # Glance's default since Ocata
    assert created["owner"] == alice.project_id
    assert created["min_disk"] == 2
    raw = call(alice, "GET", f"/images/{image_id}").json()
    assert raw["os_hash_algo"] == "sha512" and raw["os_hash_value"] == sha512
    assert raw["virtual_size"] == 5 * 1024**3       # read from the qcow2 header
    assert raw["hw_vif_model"] == "e1000" and raw["hw_disk_bus"] == "sata"
    assert raw["os_type"] == "linux" and raw["tags"] == ["debian"]
    assert raw["self"] == f"/v2/images/{image_id}" and raw["schema"] == "/v2/schemas/image"
    assert (_images_dir(cloud) / image_id).stat().st_size == 3 * MIB

    assert name in {i["Name"] for i in listed}
    saved = tmp_path / "saved"
    osc(alice, ["image", "set", "--property", "os_distro=debian", "--min-ram", "128",
                "--name", name + "-x", name],
        ["image", "unset", "--property", "hw_disk_bus", "--tag", "debian", name + "-x"],
        ["image", "save", "--file", str(saved), image_id])
    assert hashes(saved) == (md5, sha512)
    shown = call(alice, "GET", f"/images/{image_id}").json()
    assert shown["name"] == name + "-x" and shown["os_distro"] == "debian"
    assert shown["min_ram"] == 128 and "hw_disk_bus" not in shown and shown["tags"] == []
    assert shown["hw_vif_model"] == "e1000"


    alice.openstack("image", "delete", image_id)
    result = alice.openstack("image", "show", image_id, check=False)
    assert result.returncode != 0 and "No Image found" in result.stderr
    assert not (_images_dir(cloud) / image_id).exists()


def test_sdk_download_checks_hash_and_content_md5(cloud, alice, tmp_path):
    conn = cloud.sdk()
    content = qcow2_bytes(MIB, length=2 * MIB + 17)
    image = conn.image.create_image(name="sdk-img", data=content, disk_format="qcow2",
                                    container_format="bare", allow_duplicates=True,
                                    validate_checksum=True)
    try:
        image = conn.image.get_image(image.id)
        assert image.status == "active" and image.hash_algo == "sha512"
        out = tmp_path / "out"
        conn.image.download_image(image, output=str(out))   # verifies os_hash_value
        assert out.read_bytes() == content
        response = call(cloud, "GET", f"/images/{image.id}/file")
        assert response.headers["content-md5"] == image.checksum
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.content == content
    finally:
        conn.image.delete_image(image.id)


def test_versions_documents(cloud):
    root = cloud.request("GET", "/image/")
    assert root.status_code == 300
    versions = root.json()["versions"]
    assert versions[0] == {"id": "v2.7", "status": "CURRENT",
                           "links": [{"rel": "self", "href": f"{cloud.url}/image/v2/"}]}
    assert {v["id"] for v in versions} >= {"v2.0", "v2.1", "v2.6"}
    assert cloud.request("GET", "/image/versions").status_code == 200
    assert cloud.request("GET", "/image/v9/images").status_code == 300
    token = cloud.admin_token
    assert cloud.request("GET", "/image/v2.3/images", token=token).status_code == 200
    listed = cloud.request("GET", "/image/v2/images", token=token).json()
    assert listed["first"] == "/v2/images" and listed["schema"] == "/v2/schemas/images"
    schema = call(cloud, "GET", "/schemas/image").json()
    assert schema["name"] == "image" and schema["additionalProperties"] == {"type": "string"}
    assert "kernel_id" in schema["properties"]
    assert call(cloud, "GET", "/schemas/members").json()["name"] == "members"
    assert "image" in {s["Type"] for s in cloud.openstack("catalog", "list", "-f",
                                                          "json").json()}


def test_visibility_and_members_across_projects(cloud, alice, bob, tmp_path, unique_name):
    source = write_file(tmp_path / "d.raw", b"x" * 4096)
    name = unique_name("shared")
    image_id = alice.openstack("image", "create", "--file", str(source), "--disk-format",
                               "raw", "--private", name, "-f", "json").json()["id"]
    # private: bob sees nothing, changes nothing (404, as an image he cannot see)
    assert name not in _list_names(bob)
    glance_error(call(bob, "GET", f"/images/{image_id}"), 404, f"No image found with ID "
                                                            f"{image_id}")
    glance_error(call(bob, "DELETE", f"/images/{image_id}"), 404)
    # members only for shared images
    glance_error(call(alice, "POST", f"/images/{image_id}/members",
                      json={"member": bob.project_id}), 403, "Not allowed to create members")
    [member] = osc(alice, ["image", "set", "--shared", image_id],
                   ["image", "add", "project", image_id, bob.project_id, "-f", "json"])
    assert (member["member_id"], member["status"]) == (bob.project_id, "pending")
    # pending: bob may show it, his default list does not have it yet
    assert call(bob, "GET", f"/images/{image_id}").status_code == 200
    assert name not in _list_names(bob)
    pending = call(bob, "GET", "/images", params={"member_status": "pending"}).json()
    assert image_id in {i["id"] for i in pending["images"]}
    # the owner cannot accept on the member's behalf
    glance_error(call(alice, "PUT", f"/images/{image_id}/members/{bob.project_id}",
                      json={"status": "accepted"}), 403, "modify_member")
    saved = tmp_path / "by-bob"
    [listed] = osc(bob, ["image", "set", "--accept", image_id],
                   ["image", "list", "-f", "json"],
                   ["image", "save", "--file", str(saved), image_id])  # read further down
    assert name in {i["Name"] for i in listed}
    members = alice.openstack("image", "member", "list", image_id, "-f", "json").json()
    assert [(m["Member ID"], m["Status"]) for m in members] == [(bob.project_id, "accepted")]
    mine = call(bob, "GET", f"/images/{image_id}/members/{bob.project_id}").json()
    assert mine["status"] == "accepted" and mine["schema"] == "/v2/schemas/member"
    glance_error(call(bob, "GET", f"/images/{image_id}/members/{alice.project_id}"), 404,
                 "not found in the member list of the image")
    glance_error(call(cloud.new_project(), "GET", f"/images/{image_id}/members"), 404,
                 f"Image {image_id} not found.")
    glance_error(call(alice, "POST", f"/images/{image_id}/members",
                      json={"member": bob.project_id}), 409, "is duplicated for image")
    # tags by their own sub-resource: the owner's
    assert call(alice, "PUT", f"/images/{image_id}/tags/blue").status_code == 204
    assert call(bob, "GET", f"/images/{image_id}").json()["tags"] == ["blue"]
    glance_error(call(bob, "PUT", f"/images/{image_id}/tags/red"), 403, "modify_image")
    assert call(alice, "DELETE", f"/images/{image_id}/tags/blue").status_code == 204
    glance_error(call(alice, "DELETE", f"/images/{image_id}/tags/blue"), 404)
    # a member reads and downloads (saved above), but changes nothing
    assert saved.read_bytes() == source.read_bytes()
    glance_error(patch(bob, image_id, [{"op": "replace", "path": "/name", "value": "x"}]),
                 403, "You are not authorized to complete modify_image action.")
    glance_error(call(bob, "DELETE", f"/images/{image_id}"), 403, "delete_image")
    glance_error(call(bob, "POST", f"/images/{image_id}/members", json={"member": "z"}),
                 403, "add_member")
    # the owner ends the share
    alice.openstack("image", "remove", "project", image_id, bob.project_id)
    assert name not in _list_names(bob, "--shared")
    glance_error(call(bob, "GET", f"/images/{image_id}"), 404)
    # publicizing is the admin's; communitizing the owner's
    result = alice.openstack("image", "set", "--public", image_id, check=False)
    assert result.returncode != 0 and "403" in result.stderr
    glance_error(patch(alice, image_id, [{"op": "replace", "path": "/visibility",
                                          "value": "public"}]), 403,
                 "You are not authorized to complete publicize_image action.")
    cloud.openstack("image", "set", "--public", image_id)
    assert name in _list_names(cloud.new_project())
    alice.openstack("image", "set", "--community", image_id)
    stranger = cloud.new_project()
    default, community = osc(stranger, ["image", "list", "-f", "json"],
                             ["image", "list", "--community", "-f", "json"])
    assert name not in {i["Name"] for i in default}
    assert name in {i["Name"] for i in community}
    assert call(stranger, "GET", f"/images/{image_id}").status_code == 200
    glance_error(call(alice, "GET", f"/images/{image_id}/members"), 403,
                 "Only shared images have members.")
    alice.openstack("image", "delete", image_id)


def test_protected_deactivated(cloud, alice, bob, tmp_path):
    image = create(alice, name="prot", disk_format="raw", container_format="bare",
                   protected=True, visibility="community")
    image_id = image["id"]
    upload(alice, image_id, b"data" * 100)
    glance_error(call(alice, "DELETE", f"/images/{image_id}"), 403,
                 f"Image {image_id} is protected and cannot be deleted.")
    # deactivate: the owner's (Glance's default); its data then only for admins
    assert call(bob, "POST", f"/images/{image_id}/actions/deactivate").status_code == 403
    assert call(alice, "POST", f"/images/{image_id}/actions/deactivate").status_code == 204
    assert call(alice, "GET", f"/images/{image_id}").json()["status"] == "deactivated"
    for who in (alice, bob):
        glance_error(call(who, "GET", f"/images/{image_id}/file"), 403,
                     "The requested image has been deactivated. Image data download is "
                     "forbidden.")
    assert call(cloud, "GET", f"/images/{image_id}/file").content == b"data" * 100
    cloud.openstack("image", "set", "--activate", image_id)
    assert call(bob, "GET", f"/images/{image_id}/file").content == b"data" * 100
    # a queued image cannot be deactivated; its data is "no content"
    queued = create(alice, name="q", disk_format="raw", container_format="bare")
    glance_error(call(alice, "POST", f"/images/{queued['id']}/actions/deactivate"), 403,
                 "Not allowed to deactivate image in status 'queued'")
    assert call(alice, "GET", f"/images/{queued['id']}/file").status_code == 204
    alice.openstack("image", "set", "--unprotected", image_id)
    alice.openstack("image", "delete", image_id, queued["id"])


def test_bad_input_is_refused_in_glance_format(cloud, alice, unique_name):
    name = unique_name("bad")
    message = glance_error(call(alice, "POST", "/images",
                                json={"name": name, "disk_format": "bogus"}), 400)
    assert message.startswith("Provided object does not match schema 'image': 'bogus' is not "
                              "one of [None, 'ami'")
    glance_error(call(alice, "POST", "/images", json={"name": name, "status": "active"}),
                 403, "Attribute 'status' is read-only.")
    glance_error(call(alice, "POST", "/images", json={"name": name, "min_ram": "x"}), 400,
                 "'x' is not of type 'integer'")
    glance_error(call(alice, "POST", "/images", json={"name": name, "hw_vif_model": 1}), 400,
                 "1 is not of type 'string'")
    glance_error(call(alice, "POST", "/images", json={"name": name, "kernel_id": "nope"}),
                 400, "does not match")
    glance_error(call(alice, "POST", "/images", json={"name": name, "visibility": "public"}),
                 403, "You are not authorized to complete publicize_image action.")
    glance_error(call(alice, "POST", "/images", json={"name": name, "owner": "other"}),
                 403, "You are not permitted to create images owned by 'other'")
    glance_error(call(alice, "POST", "/images", content=b"{nope",
                      headers={"Content-Type": "application/json"}), 400,
                 "Malformed JSON in request body.")
    assert call(alice, "GET", "/images", params={"name": name}).json()["images"] == []

    image = create(alice, name=name, disk_format="qcow2", container_format="bare")
    image_id = image["id"]
    for op, status, text in (
            ({"op": "replace", "path": "/checksum", "value": "x"}, 403,
             "Attribute 'checksum' is read-only."),
            ({"op": "remove", "path": "/name"}, 403, "Property name may not be removed."),
            ({"op": "replace", "path": "/nothere", "value": "x"}, 409,
             "Property nothere does not exist."),
            ({"op": "move", "path": "/name"}, 400, "Invalid operation: `move`"),
            ({"op": "add", "path": "/a/b", "value": "x"}, 400,
             "Invalid JSON pointer for this resource: '/a/b'"),
            ({"op": "add", "path": "/min_ram", "value": -1}, 400,
             "Cannot be a negative value")):
        glance_error(patch(alice, image_id, [op]), status, text)
    wrong_type = call(alice, "PATCH", f"/images/{image_id}", content=b"[]",
                      headers={"Content-Type": "application/json"})
    glance_error(wrong_type, 415, "Image PATCH expects Content-Type one of")
    assert "application/openstack-images-v2.1-json-patch" in wrong_type.headers["accept-patch"]

    # data that is not the image's disk format, or a qcow2 pointing at a host file: 415,
    # and the image stays queued with no data
    for data, text in ((b"\0" * 8192, "Image disk_format qcow2 does not match stream data raw"),
                       (qcow2_bytes(MIB, backing=True), "Image failed safety checks"),
                       (qcow2_bytes(MIB, data_file=True), "Image failed safety checks")):
        response = call(alice, "PUT", f"/images/{image_id}/file", content=data,
                        headers={"Content-Type": "application/octet-stream"})
        glance_error(response, 415, text)
        shown = call(alice, "GET", f"/images/{image_id}").json()
        assert (shown["status"], shown["size"], shown["checksum"]) == ("queued", None, None)
        assert not list(_images_dir(cloud).glob(f"{image_id}*"))
    glance_error(call(alice, "PUT", f"/images/{image_id}/file", content=b"x",
                      headers={"Content-Type": "text/plain"}), 415)
    no_format = create(alice, name=name)
    glance_error(call(alice, "PUT", f"/images/{no_format['id']}/file", content=b"x",
                      headers={"Content-Type": "application/octet-stream"}), 400,
                 "Properties disk_format, container_format must be set prior to saving data.")
    upload(alice, image_id, qcow2_bytes(MIB))
    glance_error(call(alice, "PUT", f"/images/{image_id}/file", content=qcow2_bytes(MIB),
                      headers={"Content-Type": "application/octet-stream"}), 409,
                 "Image status transition from active to saving is not allowed")
    glance_error(patch(alice, image_id, [{"op": "replace", "path": "/disk_format",
                                          "value": "raw"}]), 403,
                 "Attribute disk_format can be only replaced for a queued image.")
    for target in (image_id, no_format["id"]):
        assert call(alice, "DELETE", f"/images/{target}").status_code == 204


def test_error_forms_follow_accept(cloud):
    missing = "/image/v2/images/00000000-0000-0000-0000-000000000000"
    token = cloud.admin_token
    as_html = cloud.request("GET", missing, token=token)
    assert as_html.status_code == 404 and as_html.headers["content-type"].startswith(
        "text/html")
    assert "<h1>404 Not Found</h1>" in as_html.text
    plain = cloud.request("GET", missing, token=token, headers={"Accept": ""})
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.text.startswith("404 Not Found\n\nNo image found with ID")
    as_json = cloud.request("GET", missing, token=token, headers={"Accept": "application/json"})
    assert as_json.json() == {"code": "404 Not Found", "title": "Not Found",
                              "message": "No image found with ID "
                                         "00000000-0000-0000-0000-000000000000<br /><br />\n\n\n"}
    unauthenticated = cloud.request("GET", "/image/v2/images")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == 401


def test_list_filters_sorting_pagination(cloud, unique_name):
    user = cloud.new_project()
    prefix = unique_name("l")
    made = []
    for i, (fmt, tag, distro) in enumerate((("raw", "a", "debian"), ("qcow2", "b", "ubuntu"),
                                            ("raw", "a", "debian"), ("iso", "b", "fedora"),
                                            ("raw", "c", "debian"))):
        image = create(user, name=f"{prefix}-{i}", disk_format=fmt, container_format="bare",
                       tags=[tag], os_distro=distro, visibility="private")
        upload(user, image["id"], _data(fmt, 40000 * (i + 1)))
        made.append(image["id"])

    def names(**params):
        body = call(user, "GET", "/images", params=params).json()
        # (public images of other modules are listed too)
        return [i["name"] for i in body["images"] if i["name"].startswith(prefix)]

    assert names(sort="name:asc") == [f"{prefix}-{i}" for i in range(5)]
    assert names(sort_key="name", sort_dir="desc") == [f"{prefix}-{i}" for i in
                                                       reversed(range(5))]
    assert names(tag="a", sort="name:asc") == [f"{prefix}-0", f"{prefix}-2"]
    assert names(os_distro="debian", disk_format="raw", sort="name:asc") == [
        f"{prefix}-0", f"{prefix}-2", f"{prefix}-4"]
    assert names(disk_format="in:qcow2,iso", sort="name:asc") == [f"{prefix}-1", f"{prefix}-3"]
    assert names(size_min="80000", size_max="120000", sort="name:asc") == [
        f"{prefix}-1", f"{prefix}-2"]
    assert names(name=f"{prefix}-3") == [f"{prefix}-3"]
    assert names(id=f"in:{made[0]},{made[4]}", sort="name:asc") == [f"{prefix}-0",
                                                                    f"{prefix}-4"]
    assert names(visibility="private", sort="name:asc") == [f"{prefix}-{i}" for i in range(5)]
    assert names(status="queued") == []
    assert len(names(created_at="gte:2000-01-01T00:00:00Z")) == 5
    assert names(created_at="lt:2000-01-01T00:00:00Z") == []

    # pages of two, following Glance's relative "next" links to the end
    seen, url = [], "/images?limit=2&sort=size:desc&visibility=private"
    while url:
        body = call(user, "GET", url).json()
        seen += [i["name"] for i in body["images"] if i["name"].startswith(prefix)]
        url = body.get("next", "").removeprefix("/v2")
        assert len(seen) <= 5
    assert seen == [f"{prefix}-{i}" for i in reversed(range(5))]
    sdk_names = [i.name for i in _sdk(user).image.images(limit=2, sort="name:asc",
                                                          visibility="private")]
    assert sdk_names == [f"{prefix}-{i}" for i in range(5)]

    for params, text in (({"sort_key": "owner"}, "Invalid sort key: owner."),
                         ({"limit": "-1"}, "limit param must be positive"),
                         ({"marker": "nope"}, "No image found with ID nope"),
                         ({"size_min": "big"}, "Unable to filter on a range with a"),
                         ({"name": "gt:x"}, "Unable to filter by unknown operator 'gt'."),
                         ({"visibility": "nope"}, "Invalid visibility value: nope")):
        glance_error(call(user, "GET", "/images", params=params), 400, text)
    for image_id in made:
        assert call(user, "DELETE", f"/images/{image_id}").status_code == 204


def _data(disk_format: str, size: int) -> bytes:
    """``size`` bytes a format inspector takes for ``disk_format``."""
    if disk_format == "qcow2":
        return qcow2_bytes(MIB, length=size)
    if disk_format == "iso":
        return b"\0" * 0x8001 + b"CD001" + b"\0" * (size - 0x8006)
    return b"z" * size


def _sdk(user):
    from openstack import connection

    return connection.Connection(
        auth_url=f"{user.cloud.url}/identity/v3", username=user.user_name,
        password=user.password, project_name=user.project_name, user_domain_name="Default",
        project_domain_name="Default", region_name="RegionOne")


def test_interrupted_upload_leaves_the_image_queued(cloud, alice):
    import httpx

    image = create(alice, name="cut", disk_format="raw", container_format="bare")
    image_id = image["id"]

    def body():
        yield b"a" * MIB
        yield b"b" * MIB
        raise RuntimeError("the client gives up")

    with pytest.raises((RuntimeError, httpx.HTTPError)), httpx.Client(timeout=30) as client:
        client.put(f"{cloud.url}/image/v2/images/{image_id}/file", content=body(),
                       headers={"X-Auth-Token": alice.token,
                                "Content-Type": "application/octet-stream"})
    # The server may not even have begun the cut upload when the client gives up, so a
    # "queued" seen at once proves nothing: what must hold is that the image gets back to
    # queued (a new upload is accepted) with nothing partial left behind.
    import time
    deadline = time.monotonic() + 10
    while True:
        response = call(alice, "PUT", f"/images/{image_id}/file", content=b"c" * 10,
                        headers={"Content-Type": "application/octet-stream"})
        if response.status_code != 409 or time.monotonic() > deadline:
            break
        assert "from saving to saving" in response.text, response.text
        time.sleep(0.1)
    assert response.status_code == 204, response.text
    assert sorted(p.name for p in _images_dir(cloud).glob(f"{image_id}*")) == [image_id]
    assert call(alice, "GET", f"/images/{image_id}").json()["size"] == 10
    assert call(alice, "DELETE", f"/images/{image_id}").status_code == 204


def test_delete_during_nothing_and_json(cloud, alice):
    image = create(alice, name="plain", disk_format="raw", container_format="bare")
    assert json.loads(call(alice, "GET", f"/images/{image['id']}").text)["status"] == "queued"
    assert call(alice, "DELETE", f"/images/{image['id']}").status_code == 204
    glance_error(call(alice, "DELETE", f"/images/{image['id']}"), 404)
