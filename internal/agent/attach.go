package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/podnet/podnet/api"
	"github.com/podnet/podnet/internal/driver"
	"github.com/podnet/podnet/internal/ipam"
	"github.com/podnet/podnet/internal/kernel"
	"github.com/podnet/podnet/internal/mirror"
	"github.com/podnet/podnet/internal/spec"
	"github.com/podnet/podnet/internal/store"
	"github.com/vishvananda/netns"
)

// sandboxNS returns the namespace of a request: the descriptor that came with it, else
// the path. The caller closes it. The node's namespace, or the agent's own, is refused:
// the sandbox side of an endpoint (its default route above all) would replace the node's.
func (a *Agent) sandboxNS(fd int, path string) (netns.NsHandle, error) {
	if fd < 0 && path == "" {
		return netns.None(), api.AsError(&api.ValidationError{Field: "CNI_NETNS", NoValue: true, Env: true,
			Reason: "no namespace descriptor and no path given"})
	}
	h, err := a.node.OpenSandbox(fd, path)
	if err != nil {
		if path == "" {
			path = "(descriptor)"
		}
		return h, api.AsError(api.InvalidEnv("CNI_NETNS", path, "%v", err))
	}
	return h, nil
}

// Attach connects a sandbox to a network (CNI ADD). sandboxFD is owned by Attach.
func (a *Agent) Attach(req api.AttachRequest, sandboxFD int) (api.Result, error) {
	sb, err := a.sandboxNS(sandboxFD, req.Netns)
	if err != nil {
		return api.Result{}, err
	}
	defer sb.Close()
	if err := validateKey(req.EndpointKey); err != nil {
		return api.Result{}, err
	}
	var mac net.HardwareAddr
	if req.MAC != "" {
		if mac, err = api.ParseMAC(req.MAC); err != nil {
			return api.Result{}, api.AsError(api.Invalid("", "mac", req.MAC, "%v", err))
		}
	}
	if req.Namespace == "" {
		req.Namespace = api.DefaultNamespace
	}
	for _, err := range []error{spec.ValidateNamespace(req.Namespace), spec.ValidateLabels(req.Labels)} {
		if err != nil {
			return api.Result{}, invalidConfig(err)
		}
	}
	for _, m := range req.Ports {
		if err := spec.ValidatePort(m); err != nil {
			return api.Result{}, invalidConfig(err)
		}
	}
	named, err := spec.ValidateNamedPorts(req.NamedPorts)
	if err != nil {
		return api.Result{}, invalidConfig(err)
	}
	req.NamedPorts = named
	var static []netip.Addr
	for _, s := range req.IPs {
		str := s
		if i := strings.IndexByte(str, '/'); i >= 0 {
			str = str[:i]
		}
		ip, err := netip.ParseAddr(str)
		if err != nil {
			return api.Result{}, api.AsError(api.Invalid("", "ips", s, "not an IP address"))
		}
		static = append(static, ip.Unmap())
	}
	if err := a.ensureNetwork(req.Network, req.Define); err != nil {
		return api.Result{}, err
	}
	if len(static) > 0 || len(req.Ports) > 0 {
		if err := a.finishDetachesHolding(static, req.Ports); err != nil {
			return api.Result{}, err
		}
	}
	unlock := a.lockEndpoint(req.EndpointKey)
	defer func() { unlock() }()

	// A DEL of the same attachment may still be finishing (podman's network reload is
	// DEL then ADD with the same address): finish it now.
	if err := a.finishDetachLocked(req.EndpointKey); err != nil {
		return api.Result{}, err
	}
	owner := req.EndpointKey.String()
	var n api.Network
	var ep api.Endpoint
	var e driver.Endpoint
	record := func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Network(req.Network); err != nil {
			return err
		} else if !ok {
			return notFoundNetwork(req.Network)
		}
		if old, ok, err := tx.Endpoint(req.EndpointKey); err != nil {
			return err
		} else if ok {
			return api.Errorf(api.CodeInvalidConfig, "container %s already has interface %s on network %q (state %s); DEL it first", old.ContainerID, old.IfName, old.Network, old.State)
		}
		addrs, err := ipam.AllocateOnNode(tx, n, a.nodeName, owner, static, a.created())
		if err != nil {
			return err
		}
		e = driver.For(n).Endpoint(n, req.EndpointKey, addrs, mac, req.Ports)
		ep = api.Endpoint{
			EndpointKey: req.EndpointKey, Name: req.Name, Namespace: req.Namespace, Labels: req.Labels, NamedPorts: req.NamedPorts,
			Netns: req.Netns, Node: a.nodeName, HostIf: e.Kernel.HostIf, MAC: e.Kernel.MAC.String(), IPs: addrs, Ports: req.Ports, State: api.StateAttaching,
			Created: a.created(),
		}
		if err := mirror.PodOf(tx, &ep); err != nil {
			return err
		}
		if err := a.reservePorts(tx, ep); err != nil {
			return err
		}
		return tx.PutEndpoint(ep)
	}
	// From the commit until its elements are in the tables, the ADD is in flight
	// (resyncIfDiffers).
	a.attaching.Add(1)
	defer a.attaching.Add(-1)
	err = a.store.Update(record)
	if api.ErrorCode(err) == api.CodePoolExhausted {
		// Addresses of DELs still finishing are not free yet: finish them (without
		// holding our own endpoint lock, which one of them may share), try again.
		unlock()
		ferr := a.finishDetachesOf(req.Network)
		unlock = a.lockEndpoint(req.EndpointKey)
		if ferr != nil {
			return api.Result{}, ferr
		}
		if err = a.finishDetachLocked(req.EndpointKey); err == nil {
			err = a.store.Update(record)
		}
	}
	if err != nil {
		return api.Result{}, err
	}
	rollback := func() {
		if rerr := a.forget(req.EndpointKey); rerr != nil {
			a.log.Error("roll back failed attach", "endpoint", owner, "err", rerr)
		}
	}
	if len(ep.Ports) > 0 {
		if err := a.checkPortHolders(ep.Ports); err != nil {
			rollback()
			return api.Result{}, err
		}
	}
	if err := a.publish(e); err != nil {
		rollback()
		return api.Result{}, err
	}
	if err := a.node.AddEndpoint(sb, e.Kernel); err != nil {
		a.unpublish(e, true)
		rollback()
		if errors.Is(err, kernel.ErrSandboxIfExists) {
			return api.Result{}, api.AsError(api.Invalid("", "ifName", req.IfName, "the sandbox already has an interface of that name"))
		}
		return api.Result{}, fmt.Errorf("attach %s: %w", owner, err)
	}
	// The kernel side is complete (EndpointComplete: host veth up, with its node routes),
	// which is what a restart checks for an endpoint still recorded as attaching; so the
	// record can be marked attached off the reply's path (one store commit less per ADD).
	a.marking.Add(1)
	go func() {
		defer a.marking.Done()
		if err := a.markAttached(req.EndpointKey); err != nil {
			a.log.Error("mark endpoint attached", "endpoint", owner, "err", err)
		}
	}()
	a.endpointChurn(ep)
	a.log.Debug("attached", "endpoint", owner, "ips", ep.IPs, "hostIf", ep.HostIf)
	res := driver.Result(n, e.Kernel, req.Netns)
	res.DNS = a.resultDNS(ep.Namespace)
	return res, nil
}

// markAttached records that an endpoint's kernel side is complete, unless a DEL has
// marked it detaching meanwhile.
func (a *Agent) markAttached(k api.EndpointKey) error {
	return a.store.Update(func(tx store.Tx) error {
		ep, ok, err := tx.Endpoint(k)
		if err != nil || !ok || ep.State != api.StateAttaching {
			return err
		}
		ep.State = api.StateAttached
		return tx.PutEndpoint(ep)
	})
}

// forget releases an endpoint's addresses and deletes its record (no kernel work).
func (a *Agent) forget(k api.EndpointKey) error {
	return a.store.Update(func(tx store.Tx) error {
		if _, err := ipam.Release(tx, k.Network, k.String()); err != nil {
			return err
		}
		if ep, ok, err := tx.Endpoint(k); err != nil {
			return err
		} else if ok {
			if err := a.releasePorts(tx, ep); err != nil {
				return err
			}
		}
		if err := tx.DeleteEndpoint(k); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
}

// Check verifies an attachment against the kernel (CNI CHECK).
func (a *Agent) Check(req api.CheckRequest, sandboxFD int) error {
	sb, err := a.sandboxNS(sandboxFD, req.Netns)
	if err != nil {
		return err
	}
	defer sb.Close()
	if err := validateKey(req.EndpointKey); err != nil {
		return err
	}
	var n api.Network
	var ep api.Endpoint
	err = a.store.View(func(tx store.Tx) error {
		var ok bool
		var err error
		if n, ok, err = tx.Network(req.Network); err != nil {
			return err
		} else if !ok {
			return notFoundNetwork(req.Network)
		}
		if ep, ok, err = tx.Endpoint(req.EndpointKey); err != nil {
			return err
		} else if !ok {
			return api.Errorf(api.CodeUnknownContainer, "container %s has no interface %s on network %q", req.ContainerID, req.IfName, req.Network)
		}
		return nil
	})
	if err != nil {
		return err
	}
	p := driver.EndpointFor(n, ep).Kernel
	if err := a.node.CheckEndpoint(sb, p); err != nil {
		return api.Errorf(api.CodeCheckFailed, "check %s: %v", req.EndpointKey, err)
	}
	return nil
}
