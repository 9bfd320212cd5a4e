package fastpath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The program and its maps. The program is written with cilium/ebpf's asm package (no
// compiler needed); registers, in order of use:
//
//	R6 the context (struct __sk_buff), R7 the packet's first byte, R8 its end,
//	R9 the bridge's ifindex (after the source lookup), then the destination port's.
//
// The stack holds the source and destination addresses (16 bytes each, IPv4 mapped into
// IPv6: the key of map slow, flow) and below them the key of maps src and dst, the
// ifindex then one of the addresses.

// ProgName is the name of the program in the kernel (bpftool prog show, the link's
// program): what `podnet trace` and the doctor look for on an interface.
const ProgName = "podnet_fast"

// Map names, also in the kernel.
const (
	srcMapName   = "podnet_fp_src"
	dstMapName   = "podnet_fp_dst"
	slowMapName  = "podnet_fp_slow"
	statsMapName = "podnet_fp_stats"
)

// maxEndpoints bounds maps src and dst: addresses of bridged endpoints of one node.
// Their entries are allocated when added (no preallocation).
const maxEndpoints = 1 << 16

// maxSlowFlows bounds map slow: the flows that traces keep off the fast path at once
// (a trace without a source keeps one per pod).
const maxSlowFlows = 1 << 16

// portKey is the key of maps src and dst: an interface's ifindex (src: the host veth the
// packet entered by; dst: the bridge) and an address (IPv4 mapped into IPv6).
type portKey struct {
	Ifindex uint32
	Addr    [16]byte
}

// port is the value of maps src and dst. Bridged: the endpoint's MAC, and an ifindex
// (src: the endpoint's bridge; dst: the endpoint's host veth, where the packet goes).
// Routed (Flags flagRouted): in src the host veth's own MAC (where the pod sends) and
// the network's domain; in dst the pod's MAC, the host veth and its MAC (HostMAC): the
// frame the node would send there, from the node's permanent neighbour entry.
type port struct {
	MAC     [6]byte
	Flags   uint8
	_       uint8
	Ifindex uint32
	HostMAC [6]byte
	_       [2]byte
}

// flagRouted marks the entries of routed endpoints.
const flagRouted = 1

// firstDomain is the key of the first routed network in map dst; bridges are keyed by
// their ifindex, which is below it.
const firstDomain = 1 << 31

// flowKey is the key of map slow: source then destination address.
type flowKey struct {
	Src, Dst [16]byte
}

// counter is one element of map stats, per CPU.
type counter struct {
	Packets, Bytes uint64
}

// Indexes of map stats.
const (
	statRedirected = 0 // packets the program sent to the destination's port
	statPassed     = 1 // frames it left to the kernel's path (ARP and neighbour discovery too)
	numStats       = 2
)

func addrBytes(a netip.Addr) [16]byte {
	return a.As16() // an IPv4 address as ::ffff:a.b.c.d, as the program writes it
}

// Stack offsets (from R10) of the program.
const (
	stFlow = -56 // flowKey: source address at -56, destination at -40
	stSrc  = stFlow
	stDst  = stFlow + 16
	stKey  = -20 // portKey: ifindex at -20, address at -16
	stMACs = -72 // routed: the frame's new destination MAC at -72, source MAC at -64
)

// __sk_buff fields read by the program.
const (
	skbLen         = 0
	skbVlanPresent = 20
	skbIfindex     = 40
	skbData        = 76
	skbDataEnd     = 80
)

// Return codes of a tcx program.
const (
	tcxNext = -1 // the next program, or the kernel's path after the last one
)

// objects are the program and its maps, created for one agent.
type objects struct {
	prog                 *ebpf.Program
	src, dst, slow, stat *ebpf.Map
}

func (o *objects) Close() error {
	var errs []error
	for _, c := range []interface{ Close() error }{o.prog, o.src, o.dst, o.slow, o.stat} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// load creates the maps and the program.
func load() (_ *objects, err error) {
	o := &objects{}
	defer func() {
		if err != nil {
			o.Close()
		}
	}()
	portMap := func(name string) (*ebpf.Map, error) {
		return ebpf.NewMap(&ebpf.MapSpec{
			Name: name, Type: ebpf.Hash, KeySize: 20, ValueSize: 20,
			MaxEntries: maxEndpoints, Flags: unix.BPF_F_NO_PREALLOC,
		})
	}
	if o.src, err = portMap(srcMapName); err != nil {
		return nil, fmt.Errorf("map %s: %w", srcMapName, err)
	}
	if o.dst, err = portMap(dstMapName); err != nil {
		return nil, fmt.Errorf("map %s: %w", dstMapName, err)
	}
	if o.slow, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: slowMapName, Type: ebpf.Hash, KeySize: 32, ValueSize: 1,
		MaxEntries: maxSlowFlows, Flags: unix.BPF_F_NO_PREALLOC,
	}); err != nil {
		return nil, fmt.Errorf("map %s: %w", slowMapName, err)
	}
	if o.stat, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: statsMapName, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: numStats,
	}); err != nil {
		return nil, fmt.Errorf("map %s: %w", statsMapName, err)
	}
	o.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         ProgName,
		Type:         ebpf.SchedCLS,
		AttachType:   ebpf.AttachTCXIngress,
		License:      "Dual BSD/GPL", // bpf_redirect is GPL-only
		Instructions: program(o.src.FD(), o.dst.FD(), o.slow.FD(), o.stat.FD()),
	})
	if err != nil {
		return nil, fmt.Errorf("load program %s: %w", ProgName, err)
	}
	return o, nil
}

// program is the fast path, attached at the ingress of each endpoint's host veth. A
// packet is redirected to the destination's host veth when all of these hold, and left
// to the kernel's path (tcx next) otherwise:
//
//   - an untagged IPv4 or IPv6 frame; for IPv6, not ICMPv6 (neighbour discovery, whose
//     anti-spoofing rules only nftables applies) and not a hop-by-hop header (MLD);
//   - map src has (the packet's interface, its source address): the anti-spoofing rules
//     would accept it. Bridged, the entry's MAC is the frame's source MAC (the bridge
//     table checks it); routed, it is the frame's destination MAC (the host veth's own,
//     which the node routes from);
//   - map dst has (that entry's bridge, or routed network, and the destination address),
//     on another port; bridged, its MAC is the frame's destination MAC: the bridge would
//     deliver it there;
//   - map slow does not have (source, destination): no trace is watching the flow;
//   - routed, the TTL (hop limit) is above 1: it goes down by one, and the frame gets
//     the MACs of the node's (permanent) neighbour entry of the pod: from the host veth
//     to the pod. The node's route to the pod is that host veth (package doc).
//
// The agent keeps an address out of both maps while a policy isolates it, so what is
// redirected is exactly what podnet's rules exempt from conntrack and accept (package
// doc).
func program(src, dst, slow, stat int) asm.Instructions {
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbVlanPresent, asm.Word),
		asm.JNE.Imm(asm.R2, 0, "pass"),
		asm.LoadMem(asm.R7, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R8, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, 14+20),
		asm.JGT.Reg(asm.R2, asm.R8, "pass"),
		asm.LoadMem(asm.R2, asm.R7, 12, asm.Half),
		asm.JEq.Imm(asm.R2, 0x0008, "ip4"), // ETH_P_IP, read little-endian
		asm.JEq.Imm(asm.R2, 0xdd86, "ip6"), // ETH_P_IPV6
		asm.Ja.Label("pass"),
	}

	// IPv4: ::ffff:saddr and ::ffff:daddr on the stack.
	mapped4 := func(at int16, pktOff int16) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.R10, at, 0, asm.Word),
			asm.StoreImm(asm.R10, at+4, 0, asm.Word),
			asm.StoreImm(asm.R10, at+8, -0x10000, asm.Word), // bytes 00 00 ff ff
			asm.LoadMem(asm.R2, asm.R7, pktOff, asm.Word),
			asm.StoreMem(asm.R10, at+12, asm.R2, asm.Word),
		}
	}
	ip4 := mapped4(stSrc, 14+12)
	ip4[0] = ip4[0].WithSymbol("ip4")
	ins = append(ins, ip4...)
	ins = append(ins, mapped4(stDst, 14+16)...)
	ins = append(ins, asm.Ja.Label("lookup"))

	// IPv6: the 40-byte header in the packet, then both addresses on the stack.
	copy16 := func(at int16, base asm.Register, off int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, base, off, asm.DWord),
			asm.StoreMem(asm.R10, at, asm.R2, asm.DWord),
			asm.LoadMem(asm.R2, base, off+8, asm.DWord),
			asm.StoreMem(asm.R10, at+8, asm.R2, asm.DWord),
		}
	}
	ins = append(ins,
		asm.Mov.Reg(asm.R2, asm.R7).WithSymbol("ip6"),
		asm.Add.Imm(asm.R2, 14+40),
		asm.JGT.Reg(asm.R2, asm.R8, "pass"),
		asm.LoadMem(asm.R2, asm.R7, 14+6, asm.Byte),
		asm.JEq.Imm(asm.R2, unix.IPPROTO_ICMPV6, "pass"),
		asm.JEq.Imm(asm.R2, unix.IPPROTO_HOPOPTS, "pass"),
	)
	ins = append(ins, copy16(stSrc, asm.R7, 14+8)...)
	ins = append(ins, copy16(stDst, asm.R7, 14+24)...)

	// lookup: the source's port.
	lookup := func(m int) asm.Instructions {
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, m),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, stKey),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "pass"),
		}
	}
	// macIs jumps to pass unless the 6 bytes at pktOff equal the entry's MAC (R0).
	macIs := func(pktOff int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R7, pktOff, asm.Word),
			asm.JNE.Reg(asm.R2, asm.R3, "pass"),
			asm.LoadMem(asm.R2, asm.R0, 4, asm.Half),
			asm.LoadMem(asm.R3, asm.R7, pktOff+4, asm.Half),
			asm.JNE.Reg(asm.R2, asm.R3, "pass"),
		}
	}
	ins = append(ins,
		asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word).WithSymbol("lookup"),
		asm.StoreMem(asm.R10, stKey, asm.R2, asm.Word),
	)
	ins = append(ins, copy16(stKey+4, asm.R10, stSrc)...)
	ins = append(ins, lookup(src)...)
	// R8 (the packet's end is known by now) holds the source's kind from here on.
	ins = append(ins,
		asm.LoadMem(asm.R8, asm.R0, 6, asm.Byte),
		asm.JNE.Imm(asm.R8, 0, "routedSrc"),
	)
	ins = append(ins, macIs(6)...) // bridged: the pod's own MAC
	ins = append(ins, asm.Ja.Label("srcOK"))
	routedSrc := macIs(0) // routed: sent to the host veth
	routedSrc[0] = routedSrc[0].WithSymbol("routedSrc")
	ins = append(ins, routedSrc...)
	ins = append(ins, asm.LoadMem(asm.R9, asm.R0, 8, asm.Word).WithSymbol("srcOK")) // the bridge or domain

	// The destination's port on that bridge, or in that routed network.
	ins = append(ins, asm.StoreMem(asm.R10, stKey, asm.R9, asm.Word))
	ins = append(ins, copy16(stKey+4, asm.R10, stDst)...)
	ins = append(ins, lookup(dst)...)
	ins = append(ins, asm.JNE.Imm(asm.R8, 0, "routedDst"))
	ins = append(ins, macIs(0)...)
	ins = append(ins, asm.Ja.Label("dstOK"))
	// Routed: the MACs the frame will carry, kept on the stack past the next lookup.
	ins = append(ins,
		asm.LoadMem(asm.R2, asm.R0, 0, asm.Word).WithSymbol("routedDst"),
		asm.StoreMem(asm.R10, stMACs, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R0, 4, asm.Half),
		asm.StoreMem(asm.R10, stMACs+4, asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.R0, 12, asm.Word),
		asm.StoreMem(asm.R10, stMACs+8, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R0, 16, asm.Half),
		asm.StoreMem(asm.R10, stMACs+12, asm.R2, asm.Half),
	)
	ins = append(ins,
		asm.LoadMem(asm.R9, asm.R0, 8, asm.Word).WithSymbol("dstOK"), // the destination's host veth
		asm.LoadMem(asm.R2, asm.R6, skbIfindex, asm.Word),
		asm.JEq.Reg(asm.R2, asm.R9, "pass"),

		// A flow a trace follows stays on the kernel's path.
		asm.LoadMapPtr(asm.R1, slow),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stFlow),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
	)
	ins = append(ins, asm.JNE.Imm(asm.R8, 0, "routed"))
	// redirect: out of the destination's host veth (R9), as the bridge or the node's
	// forwarding would send it.
	ins = append(ins, count(stat, statRedirected, "redirect")...)
	ins = append(ins,
		asm.Mov.Reg(asm.R1, asm.R9),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	)

	// Routed: the node forwards it, so the TTL (hop limit) goes down by one; a packet
	// whose TTL would end here takes the kernel's path (ICMP time exceeded).
	setMACs := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R10, stMACs, asm.Word),
		asm.StoreMem(asm.R7, 0, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R10, stMACs+4, asm.Half),
		asm.StoreMem(asm.R7, 4, asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.R10, stMACs+8, asm.Word),
		asm.StoreMem(asm.R7, 6, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R10, stMACs+12, asm.Half),
		asm.StoreMem(asm.R7, 10, asm.R2, asm.Half),
	}
	ins = append(ins,
		asm.LoadMem(asm.R2, asm.R7, 12, asm.Half).WithSymbol("routed"),
		asm.JEq.Imm(asm.R2, 0xdd86, "routed6"),
		// IPv4: TTL and protocol are one 16-bit word of the checksum.
		asm.LoadMem(asm.R3, asm.R7, 14+8, asm.Half),
		asm.Mov.Reg(asm.R2, asm.R3),
		asm.And.Imm(asm.R2, 0xff), // the TTL: the first byte, read little-endian
		asm.JLE.Imm(asm.R2, 1, "pass"),
	)
	ins = append(ins, setMACs...) // before the checksum helper, which ends R7's validity
	ins = append(ins,
		asm.Mov.Reg(asm.R4, asm.R3),
		asm.Add.Imm(asm.R4, -1),
		asm.StoreMem(asm.R7, 14+8, asm.R4, asm.Half),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 14+10),
		asm.Mov.Imm(asm.R5, 2),
		asm.FnL3CsumReplace.Call(), // R3 old, R4 new
		asm.Ja.Label("redirect"),
		asm.LoadMem(asm.R2, asm.R7, 14+7, asm.Byte).WithSymbol("routed6"),
		asm.JLE.Imm(asm.R2, 1, "pass"),
		asm.Add.Imm(asm.R2, -1),
		asm.StoreMem(asm.R7, 14+7, asm.R2, asm.Byte),
	)
	ins = append(ins, setMACs...)
	ins = append(ins, asm.Ja.Label("redirect"))
	ins = append(ins, count(stat, statPassed, "pass")...)
	ins = append(ins,
		asm.Mov.Imm(asm.R0, tcxNext),
		asm.Return(),
	)
	return ins
}

// count adds the packet (skb len from R6) to element idx of map stat; the first
// instruction carries symbol sym (if any).
func count(stat, idx int, sym string) asm.Instructions {
	ins := asm.Instructions{
		asm.StoreImm(asm.R10, stKey, int64(idx), asm.Word),
		asm.LoadMapPtr(asm.R1, stat),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "counted"+sym),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R2, 1),
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R0, 8, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, skbLen, asm.Word),
		asm.Add.Reg(asm.R2, asm.R3),
		asm.StoreMem(asm.R0, 8, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("counted" + sym), // a no-op to land on
	}
	if sym != "" {
		ins[0] = ins[0].WithSymbol(sym)
	}
	return ins
}
