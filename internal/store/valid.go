package store

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/podnet/podnet/api"
)

// The checks of the inputs that every implementation refuses the same way, with the
// field and the value in the error. The caller puts the operation in front.

// CheckRegistration checks the arguments of Store.Register.
func CheckRegistration(node, holder string, ttl time.Duration) error {
	switch {
	case node == "":
		return errors.New("empty node name")
	case holder == "":
		return errors.New("empty holder")
	case ttl <= 0:
		return fmt.Errorf("ttl %s: not positive", ttl)
	}
	return nil
}

// CheckNode checks a node given to Tx.PutNode.
func CheckNode(n api.Node) error {
	if n.Name == "" {
		return errors.New("empty name")
	}
	return nil
}

// CheckBlock checks a block given to Tx.PutBlock; that its network exists is the
// transaction's business.
func CheckBlock(b api.Block) error {
	switch {
	case b.Network == "":
		return errors.New("empty network name")
	case !b.Prefix.IsValid():
		return errors.New("invalid prefix")
	case b.Prefix != b.Prefix.Masked():
		return fmt.Errorf("prefix %s: not masked (the block is %s)", b.Prefix, b.Prefix.Masked())
	case b.Node == "":
		return errors.New("empty node name")
	}
	return nil
}

// CheckPort checks the arguments of Tx.PutPort.
func CheckPort(node, proto, owner string) error {
	switch {
	case node == "":
		return errors.New("empty node name")
	case proto == "":
		return errors.New("empty protocol")
	case owner == "":
		return errors.New("empty owner")
	}
	return nil
}

// CheckBGPPeer checks a peer given to Tx.PutBGPPeer.
func CheckBGPPeer(p api.BGPPeer) error {
	if p.Name == "" {
		return errors.New("empty name")
	}
	return nil
}

// CheckNetworkPolicy checks a policy given to Tx.PutNetworkPolicy: its namespace and
// name are parts of its key.
func CheckNetworkPolicy(p api.NetworkPolicy) error {
	if err := checkKeyName("namespace", p.Namespace); err != nil {
		return err
	}
	return checkKeyName("name", p.Name)
}

// CheckNamespace checks a namespace given to Tx.PutNamespace.
func CheckNamespace(ns api.Namespace) error { return checkKeyName("name", ns.Name) }

// CheckPod checks a pod record given to Tx.PutPod: its namespace and name are parts
// of its key.
func CheckPod(p api.Pod) error {
	if err := checkKeyName("namespace", p.Namespace); err != nil {
		return err
	}
	return checkKeyName("name", p.Name)
}

// checkKeyName checks a name that is part of a key, field saying which: not empty,
// and without NUL, which bolt puts between the parts of a key (a namespace's name
// is also the first part of its policies' and pods' keys).
func checkKeyName(field, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("empty %s", field)
	case strings.IndexByte(v, 0) >= 0:
		return fmt.Errorf("%s %q: contains NUL", field, v)
	}
	return nil
}

// IsBlockPrefix reports whether p can name a block: valid and masked. Reads of any
// other prefix find nothing.
func IsBlockPrefix(p netip.Prefix) bool { return p.IsValid() && p == p.Masked() }
