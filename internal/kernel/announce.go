package kernel

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/internal/plan"
)

// announce makes the kernel announce the sandbox addresses (gratuitous ARP, unsolicited
// neighbour advertisement) through a path that forwards them.
//
// The announcement arp_notify/ndisc_notify send when the sandbox end comes up is lost:
// carrier changes reach the bridge (which enables the port) and the qdisc layer
// (which activates the device) through linkwatch, asynchronously. So: first force
// linkwatch to process both ends (an ethtool link query does that synchronously), then
// set the hardware address again, which is a "hardware address change" for
// arp_notify and ndisc_notify and sends the announcements once more.
func (n *Node) announce(sandbox netns.NsHandle, sh *netlink.Handle, link netlink.Link, ep plan.Endpoint) error {
	if err := syncLink(sandbox, ep.SandboxIf); err != nil {
		return err
	}
	if err := syncLink(n.ns, ep.HostIf); err != nil {
		return err
	}
	if err := sh.LinkSetHardwareAddr(link, ep.MAC); err != nil {
		return fmt.Errorf("sandbox %s: announce addresses: %w", ep.SandboxIf, err)
	}
	return nil
}

// syncLink runs an ETHTOOL_GLINK query on ifname inside ns; the kernel processes the
// device's pending link-state event before answering it.
func syncLink(ns netns.NsHandle, ifname string) error {
	return Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sync link %s: %w", ifname, err)
		}
		defer unix.Close(fd)
		var value struct{ cmd, data uint32 }
		value.cmd = unix.ETHTOOL_GLINK
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&value)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&value)
		if errno != 0 {
			return fmt.Errorf("sync link %s: %w", ifname, errno)
		}
		return nil
	})
}
