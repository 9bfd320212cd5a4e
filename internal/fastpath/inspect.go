package fastpath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podnet/podnet/internal/kernel"
)

// Counter counts packets and their bytes.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Stats are the fast path's counters since the agent started.
type Stats struct {
	// Redirected went straight to the destination pod's host veth.
	Redirected Counter `json:"redirected"`
	// Passed are the pods' other frames (ARP and neighbour discovery too), left to the
	// kernel's path.
	Passed Counter `json:"passed"`
	// Ports are the host veths the program is attached to, Entries the addresses in
	// maps src and dst.
	Ports      int `json:"ports"`
	SrcEntries int `json:"srcEntries"`
	DstEntries int `json:"dstEntries"`
}

// Stats reads the counters.
func (f *Applier) Stats() (Stats, error) {
	f.mu.Lock()
	s := Stats{Ports: len(f.attached), SrcEntries: len(f.srcAt), DstEntries: len(f.dstAt)}
	f.mu.Unlock()
	var err error
	if s.Redirected, err = f.objs.count(statRedirected); err != nil {
		return s, err
	}
	s.Passed, err = f.objs.count(statPassed)
	return s, err
}

func (o *objects) count(idx uint32) (Counter, error) {
	var perCPU []counter
	if err := o.stat.Lookup(idx, &perCPU); err != nil {
		return Counter{}, fmt.Errorf("fast path counters: %w", err)
	}
	var c Counter
	for _, v := range perCPU {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

// Program is an eBPF program attached at the tcx ingress hook of an interface.
type Program struct {
	Ifname string
	ID     ebpf.ProgramID
	LinkID link.ID // the bpf link that holds it; 0 when none does
	Name   string
}

// TCXIngress lists the programs attached at the tcx ingress hook of the interfaces of
// namespace node (podnet's and other tools'), each interface's in the order they run.
func TCXIngress(node netns.NsHandle) ([]Program, error) {
	h, err := netlink.NewHandleAt(node)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []Program
	err = kernel.Do(node, func() error {
		for _, l := range links {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
			if err != nil {
				continue // gone meanwhile, or no tcx
			}
			for _, p := range res.Programs {
				prog := Program{Ifname: l.Attrs().Name, ID: p.ID}
				prog.LinkID, _ = p.LinkID()
				if fd, err := ebpf.NewProgramFromID(p.ID); err == nil {
					if info, err := fd.Info(); err == nil {
						prog.Name = info.Name
					}
					fd.Close()
				}
				out = append(out, prog)
			}
		}
		return nil
	})
	return out, err
}

// Bypass keeps the packets between a and b, both ways, off the fast path of namespace
// node (the maps of every fast path program attached there) until undo is called, so
// that they cross the netfilter hooks: `podnet trace` calls it before it marks a flow.
// Without a, it keeps every pod of b's family in map dst (the fast path's bridges and
// routed networks) off it with b.
// Without a fast path there is nothing to do. When the caller dies before undo, the
// flow stays on the kernel's path until the agent restarts.
func Bypass(node netns.NsHandle, a, b netip.Addr) (undo func() error, err error) {
	maps, err := programMaps(node)
	if err != nil {
		return nil, fmt.Errorf("fast path: %w", err)
	}
	defer func() {
		for _, m := range maps {
			if m.name != slowMapName || err != nil {
				m.Close()
			}
		}
	}()
	peers := []netip.Addr{a}
	if !a.IsValid() {
		peers = nil
		for _, m := range maps {
			if m.name != dstMapName {
				continue
			}
			var k portKey
			for it := m.Iterate(); it.Next(&k, new(port)); {
				if p := netip.AddrFrom16(k.Addr).Unmap(); p.Is4() == b.Is4() {
					peers = append(peers, p)
				}
			}
		}
	}
	var keys []flowKey
	for _, p := range peers {
		keys = append(keys, flowKey{addrBytes(p), addrBytes(b)}, flowKey{addrBytes(b), addrBytes(p)})
	}
	var slow []*ebpf.Map
	for _, m := range maps {
		if m.name != slowMapName {
			continue
		}
		slow = append(slow, m.Map)
		for _, k := range keys {
			if err = m.Put(k, uint8(1)); err != nil {
				return nil, fmt.Errorf("fast path: keep %s <-> %s off it: %w", a, b, err)
			}
		}
	}
	return func() error {
		var errs []error
		for _, m := range slow {
			for _, k := range keys {
				if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					errs = append(errs, err)
				}
			}
			m.Close()
		}
		return errors.Join(errs...)
	}, nil
}

type namedMap struct {
	*ebpf.Map
	name string
}

// programMaps opens the maps of the fast path programs attached in namespace node.
func programMaps(node netns.NsHandle) ([]namedMap, error) {
	progs, err := TCXIngress(node)
	if err != nil {
		return nil, err
	}
	seen := map[ebpf.MapID]bool{}
	var maps []namedMap
	for _, p := range progs {
		if p.Name != ProgName {
			continue
		}
		prog, err := ebpf.NewProgramFromID(p.ID)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := prog.Info()
		prog.Close()
		if err != nil {
			continue
		}
		ids, _ := info.MapIDs()
		for _, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				continue
			}
			mi, err := m.Info()
			if err != nil {
				m.Close()
				continue
			}
			maps = append(maps, namedMap{m, mi.Name})
		}
	}
	return maps, nil
}
