#!/bin/sh
# /init of stacklet's tiny guest (busybox-static, Debian's kernel modules). What a cloud image
# does, small: DHCP on every NIC, the instance's identity from the config drive and from the
# metadata service (169.254.169.254), hostname and SSH keys, an HTTP page, everything said on
# the serial console as "stacklet-guest: ..." lines; an ACPI power button powers it off.
# With root=<dev> on the kernel command line it mounts that disk and hands over to its
# /sbin/init instead (the cloud-init image). With stacklet.probe it only says so and powers off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp /mnt/config /newroot /root/.ssh /www
mount -t tmpfs tmpfs /run

say() { echo "stacklet-guest: $*"; }

cmdline=$(cat /proc/cmdline)
arg() { for word in $cmdline; do case "$word" in "$1"=*) echo "${word#*=}"; return;; esac; done; }

case " $cmdline " in *" stacklet.probe "*)
    say "probe ok"
    poweroff -f;;
esac

# Drivers for the devices present (PCI class 02: NICs first, the guest's critical path;
# class 01: disk and CD-ROM controllers), by their modaliases, as udev would
pci_drivers() {  # pci_drivers CLASS-PREFIX
    for dev in /sys/bus/pci/devices/*; do
        case "$(cat "$dev/class")" in "$1"*) modprobe -q "$(cat "$dev/modalias")";; esac
    done
}
virtio_drivers() {
    for dev in /sys/bus/virtio/devices/*; do
        [ -e "$dev/modalias" ] && modprobe -q "$(cat "$dev/modalias")"
    done
}
modprobe -q virtio_pci
pci_drivers 0x02
virtio_drivers

root=$(arg root)
if [ -n "$root" ]; then
    pci_drivers 0x01
    for module in sd_mod sr_mod isofs crc32c_generic ext4 button evdev; do
        modprobe -q "$module"
    done
    # hand over to the disk's init (the disk appears once its driver probed it)
    n=0
    while [ $n -lt 100 ]; do
        case "$root" in
            LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null);;
            *) dev=$root;;
        esac
        [ -n "$dev" ] && [ -b "$dev" ] && break
        n=$((n + 1)); sleep 0.1
    done
    say "root $root is $dev"
    mount -o rw "$dev" /newroot || { say "cannot mount $dev"; sleep 5; poweroff -f; }
    umount /run
    mount --move /dev /newroot/dev 2>/dev/null
    umount /sys /proc
    exec switch_root /newroot /sbin/init
fi

ip link set lo up
say "tiny guest up, kernel $(uname -r)"

json_string() {  # json_string KEY < one-line JSON: the first string value of KEY
    sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -n 1
}

install_keys() {  # install_keys SOURCE < meta_data.json
    keys=$(sed -n 's/.*"public_keys": *{\([^}]*\)}.*/\1/p')
    [ -n "$keys" ] || return
    echo "$keys" | sed 's/", *"/"\n"/g' | sed -n 's/^ *"[^"]*": *"\(.*\)" *$/\1/p' \
        | sed 's/\\n$//' > /root/.ssh/authorized_keys
    say "$1: $(grep -c . /root/.ssh/authorized_keys) public keys installed"
}

# DHCP on every NIC, each in the background (udhcpc keeps renewing)
nics=""
for path in /sys/class/net/*; do
    nic=${path##*/}
    [ "$nic" = lo ] && continue
    nics="$nics $nic"
    ip link set "$nic" up
    udhcpc -i "$nic" -f -t 30 -T 1 -A 1 -s /etc/udhcpc.script -O mtu -O staticroutes \
        >/dev/null 2>&1 &
done
say "NICs:$nics"

# then the disks and the CD-ROM (the config drive), the power button
pci_drivers 0x01
for module in sd_mod sr_mod isofs button evdev; do modprobe -q "$module"; done
acpid -f -c /etc/acpi -l /run/acpid.log </dev/null >/dev/console 2>&1 &

# The config drive (ISO 9660 labelled config-2), when the instance has one
n=0
while [ $n -lt 15 ]; do
    cd_dev=$(findfs LABEL=config-2 2>/dev/null) && break
    [ -e /dev/sr0 ] || break     # no CD-ROM at all: no config drive
    n=$((n + 1)); sleep 0.1
done
if [ -n "$cd_dev" ] && mount -t iso9660 -o ro "$cd_dev" /mnt/config; then
    md=/mnt/config/openstack/latest/meta_data.json
    if [ -f "$md" ]; then
        say "config drive $cd_dev: read openstack/latest/meta_data.json uuid=$(json_string uuid < "$md") hostname=$(json_string hostname < "$md")"
        install_keys "config drive" < "$md"
        [ -f /mnt/config/openstack/latest/user_data ] && \
            say "config drive: user_data $(wc -c < /mnt/config/openstack/latest/user_data) bytes"
    else
        say "config drive $cd_dev: no openstack/latest/meta_data.json"
    fi
fi

# the metadata service, once a NIC has a lease
n=0
while [ $n -lt 300 ] && ! ls /run/lease.* >/dev/null 2>&1; do n=$((n + 1)); sleep 0.1; done
tries=0
while [ $tries -lt 20 ]; do
    if timeout 5 wget -q -O /run/meta_data.json \
            http://169.254.169.254/openstack/latest/meta_data.json 2>/dev/null \
            && [ -s /run/meta_data.json ]; then
        name=$(json_string hostname < /run/meta_data.json)
        say "metadata: fetched meta_data.json uuid=$(json_string uuid < /run/meta_data.json) hostname=$name"
        if [ -n "$name" ]; then
            hostname "${name%%.*}"
            say "hostname set to $(hostname)"
        fi
        install_keys metadata < /run/meta_data.json
        break
    fi
    tries=$((tries + 1)); sleep 1
done
[ $tries -lt 20 ] || say "metadata: not reachable"

echo "$(hostname)" > /www/index.html
httpd -p 80 -h /www
say "ready"
while true; do sleep 3600; done
