"""The tiny image: Debian's kernel + a busybox-static initramfs (``init.sh``).

Build: ``apt-get download`` linux-image-amd64's kernel and busybox-static, ``dpkg-deb -x``,
copy the kernel modules the guest needs (with their dependencies, ``depmod -b``), busybox and
its applet links, the init and udhcpc's script into a newc cpio (``busybox cpio``), gzip it.
About 20 s and 70 MB of downloads, once; the result is ~70 MB (the kernel is kept
uncompressed, see _extract_vmlinux).
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

from stacklet.guest_images import BuildError, GuestImage, building, cache_dir, debs, digest

KERNEL_PACKAGE = "linux-image-amd64"
# NICs (virtio, e1000, rtl8139), disks (virtio, IDE via PIIX, SATA via AHCI), the config
# drive's CD-ROM and ISO 9660, ext4 for the cloud-init image's root, the ACPI power button
MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "e1000", "8139cp", "8139too",
           "ata_piix", "ahci", "sd_mod", "sr_mod", "isofs", "crc32c_generic", "ext4",
           "button", "evdev")
# mitigations=off, cryptomgr.notests and no_timer_check took ~0.4 s off the kernel's ~1.9 s
# under TCG here (the guest's own hardening against its own processes: a test image's trade)
COMMAND_LINE = "console=ttyS0 mitigations=off cryptomgr.notests no_timer_check"
HERE = Path(__file__).resolve().parent
SOURCES = ("init.sh", "udhcpc.script")
BUILD = 1


def recipe() -> str:
    """What makes the image: a change rebuilds it under a new directory (bump BUILD when the
    build itself changes)."""
    return digest(str(BUILD), KERNEL_PACKAGE, *MODULES,
                  *((HERE / name).read_bytes() for name in SOURCES))


def directory() -> Path:
    return cache_dir() / f"tiny-{recipe()}"


def image(base: Path | None = None) -> GuestImage:
    d = base or directory()
    return GuestImage("tiny", d / "vmlinux", d / "initrd.img", d / "disk.qcow2", COMMAND_LINE)


def built() -> GuestImage | None:
    img = image()
    return img if img.kernel.is_file() and img.ramdisk.is_file() else None


def build(force: bool = False, log=print) -> GuestImage:
    """Build the tiny image into the cache (once; ``force`` rebuilds) and return it."""
    final = directory()
    if built() and not force:
        return image(final)
    with building(final) as (work, out):
        log(f"build-images: tiny: downloading {KERNEL_PACKAGE} and busybox-static")
        kernel_deb = debs.fetch(debs.resolve(KERNEL_PACKAGE), work / "debs")
        busybox_deb = debs.fetch("busybox-static", work / "debs")
        kernel_root = debs.unpack(kernel_deb, work / "kernel")
        busybox_root = debs.unpack(busybox_deb, work / "busybox")
        version = _kernel_version(kernel_root)
        _extract_vmlinux(kernel_root / "boot" / f"vmlinuz-{version}", out / "vmlinux")
        root = work / "root"
        _initramfs_tree(root, kernel_root, busybox_root, version)
        _cpio_gz(root, busybox_root / "bin" / "busybox", out / "initrd.img")
        # the image's disk: empty (the tiny guest lives in its initramfs); Glance needs data
        debs.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out / "disk.qcow2"), "64M"])
        (out / "kernel-version").write_text(version + "\n")
    log(f"build-images: tiny: {final}")
    return image(final)


def _extract_vmlinux(bzimage: Path, target: Path) -> None:
    """The ELF kernel inside Debian's bzImage. QEMU boots it through its PVH entry point
    (CONFIG_PVH): the XZ decompression of the bzImage alone took ~7 s under TCG here, the
    PVH boot of the ELF none (both kernels then ~1.5 s to init)."""
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise BuildError(f"{bzimage}: no XZ-compressed kernel inside")
    elf = lzma.LZMADecompressor().decompress(data[start:])
    if not elf.startswith(b"\x7fELF"):
        raise BuildError(f"{bzimage}: the XZ stream is not an ELF kernel")
    target.write_bytes(elf)


def _kernel_version(kernel_root: Path) -> str:
    versions = sorted(p.name for p in (kernel_root / "lib" / "modules").iterdir())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in the package, found {versions}")
    return versions[0]


def _module_closure(modules_dir: Path) -> list[str]:
    """The module files (relative paths) of MODULES and everything they depend on."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[name] = path
    wanted: list[str] = []
    todo = []
    for name in MODULES:
        key = name.replace("-", "_")
        if key not in by_name:
            raise BuildError(f"module {name} is not in the kernel package")
        todo.append(by_name[key])
    while todo:
        path = todo.pop()
        if path not in wanted:
            wanted.append(path)
            todo.extend(deps.get(path, []))
    return wanted


def _initramfs_tree(root: Path, kernel_root: Path, busybox_root: Path, version: str) -> None:
    full_modules = kernel_root / "lib" / "modules" / version
    debs.run(["depmod", "-b", str(kernel_root), version])      # the .deb has no modules.dep
    modules = root / "lib" / "modules" / version
    for rel in _module_closure(full_modules):
        target = modules / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(full_modules / rel, target)
    for name in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (full_modules / name).exists():
            shutil.copy(full_modules / name, modules / name)
    debs.run(["depmod", "-b", str(root), version])
    for d in ("bin", "sbin", "etc/acpi/PWRF", "proc", "sys", "dev", "run", "tmp", "root",
              "mnt", "newroot", "www", "usr/bin", "usr/sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = root / "bin" / "busybox"
    shutil.copy(busybox_root / "bin" / "busybox", busybox)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = root / applet
        if not link.exists() and link.name != "busybox":
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    shutil.copy(HERE / "init.sh", root / "init")
    shutil.copy(HERE / "udhcpc.script", root / "etc" / "udhcpc.script")
    power = root / "etc" / "acpi" / "PWRF" / "00000080"
    power.write_text("#!/bin/sh\necho 'stacklet-guest: power button: powering off' "
                     ">/dev/console\nsync\npoweroff -f\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    for path in (root / "init", root / "etc" / "udhcpc.script", power):
        path.chmod(0o755)


def _cpio_gz(root: Path, busybox: Path, target: Path) -> None:
    """A newc archive of ``root`` (busybox cpio: cpio itself may not be installed), gzipped."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    proc = subprocess.run([str(busybox), "cpio", "-o", "-H", "newc"], cwd=root,
                          input="\n".join([".", *names]).encode() + b"\n",
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"busybox cpio: {proc.stderr.decode(errors='replace')[-500:]}")
    with gzip.open(target, "wb", compresslevel=6) as out:
        out.write(proc.stdout)
