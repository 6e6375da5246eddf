"""``[compute] virt_type``: kvm, qemu (TCG) or auto. auto uses KVM only when it really runs a
guest: a /dev/kvm can exist and still be useless (PVM's kvm_pvm here: a stock kernel crawls
through KVM's instruction emulator, its first message after 30-150 s, then dies with
"emulation failure"). So auto boots the tiny image's kernel once under KVM with
``stacklet.probe`` on its command line (its init says "probe ok" and powers off: ~1 s on
working KVM) and takes KVM only if that line comes within the probe's time. The answer is
kept in ``<state_dir>/virt-probe.json`` for this boot of the machine and this QEMU.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

LOG = logging.getLogger(__name__)

PROBE_TIMEOUT = 15.0
PROBE_OK = "stacklet-guest: probe ok"
QEMU = "qemu-system-x86_64"
# -cpu host makes QEMU 7.2 abort on MSR 0x10a (arch-capabilities) under kvm_pvm
KVM_CPU = "host,-arch-capabilities"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _qemu_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, check=False,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return ""


def resolve(virt_type: str, state_dir: Path, binary: str = QEMU,
            probe_kernel: tuple[Path, Path] | None = None) -> tuple[str, str]:
    """(accelerator "kvm" or "tcg", why). kvm/qemu are taken as configured."""
    if virt_type == "kvm":
        return "kvm", "configured"
    if virt_type == "qemu":
        return "tcg", "configured"
    if virt_type != "auto":
        raise ValueError(f"[compute] virt_type {virt_type!r}: kvm, qemu or auto")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    cache = state_dir / "virt-probe.json"
    key = {"boot_id": _boot_id(), "qemu": _qemu_version(binary)}
    try:
        cached = json.loads(cache.read_text())
        if {k: cached.get(k) for k in key} == key:
            return cached["accel"], cached["why"]
    except (OSError, ValueError, KeyError):
        pass
    if probe_kernel is None:
        probe_kernel = _tiny_kernel()
    if probe_kernel is None:
        return "tcg", "/dev/kvm exists but no kernel to probe it with (scripts/build-images)"
    works, why = probe(binary, *probe_kernel)
    result = {**key, "accel": "kvm" if works else "tcg", "why": why}
    state_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result) + "\n")
    LOG.info("virt_type auto: %s (%s)", result["accel"], why)
    return result["accel"], why


def _tiny_kernel() -> tuple[Path, Path] | None:
    from stacklet.guest_images import tiny
    image = tiny.built()
    return (image.kernel, image.ramdisk) if image else None


def probe(binary: str, kernel: Path, initrd: Path, timeout: float = PROBE_TIMEOUT,
          accel: str = "kvm") -> tuple[bool, str]:
    """Boot ``kernel`` under ``accel`` (kvm or tcg) until its init says it runs;
    (works, why)."""
    with tempfile.TemporaryDirectory(prefix="stacklet-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        cpu = ["-accel", "kvm", "-cpu", KVM_CPU] if accel == "kvm" else \
            ["-accel", "tcg,tb-size=64", "-cpu", "max"]
        cmd = [binary, *cpu, "-machine", "pc", "-m", "128",
               "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
               "-append", "console=ttyS0 quiet stacklet.probe",
               "-chardev", f"file,id=console,path={log}", "-serial", "chardev:console"]
        started = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            return False, f"KVM probe: {exc}"
        try:
            while time.monotonic() - started < timeout:
                if log.exists() and PROBE_OK in log.read_text(errors="replace"):
                    return True, (f"{accel} ran a guest kernel to its init in "
                                  f"{time.monotonic() - started:.1f} s")
                if proc.poll() is not None:
                    err = (proc.stderr.read() or "").strip().splitlines()
                    return False, (f"{accel} probe: QEMU exited {proc.returncode}: "
                                  f"{err[-1] if err else ''}")
                time.sleep(0.1)
            return False, (f"{accel} could not run a guest kernel to its init within "
                           f"{timeout:.0f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
