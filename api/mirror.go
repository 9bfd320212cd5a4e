package api

// Mirroring: podnet controller copies objects of the Kubernetes API into podnet's store,
// either straight into a shared store (etcd) or through the local agent's socket
// (PathMirror). Each object carries its Source; the CLI refuses to change them.

// Pod is what the Kubernetes API says of a pod: its labels and named container ports
// are those of every endpoint attached under its namespace and name (CNI_ARGS
// K8S_POD_NAMESPACE and K8S_POD_NAME), whether the endpoint exists yet or not.
type Pod struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	NamedPorts  []NamedPort       `json:"namedPorts,omitempty"`
	HostNetwork bool              `json:"hostNetwork,omitempty"`
	Source      string            `json:"source,omitempty"`
}

// Kinds of mirrored objects.
const (
	KindNamespace     = "Namespace"
	KindPod           = "Pod"
	KindService       = "Service"
	KindNetworkPolicy = "NetworkPolicy"
	// KindNode is a node's pod ranges and address (podnet controller --node-pod-cidrs);
	// its key has no namespace: Node//NAME.
	KindNode = "Node"
)

// MirrorChange puts or deletes one object: Kind with Namespace and Name (Name only for
// a namespace and a node), and for a put the object of that kind. A node's change puts
// or clears its PodCIDRs, InternalIP and Source only: the rest of the node's record is
// its agent's.
type MirrorChange struct {
	Kind      string         `json:"kind"`
	Namespace string         `json:"namespace,omitempty"`
	Name      string         `json:"name"`
	Delete    bool           `json:"delete,omitempty"`
	NS        *Namespace     `json:"ns,omitempty"`
	Pod       *Pod           `json:"pod,omitempty"`
	Service   *ServiceSpec   `json:"service,omitempty"`
	Policy    *NetworkPolicy `json:"policy,omitempty"`
	Node      *Node          `json:"node,omitempty"`
}

// Key names the object of a change: KIND/NAMESPACE/NAME.
func (c MirrorChange) Key() string { return c.Kind + "/" + c.Namespace + "/" + c.Name }

// MirrorRequest applies changes of one source, in order, in one transaction.
type MirrorRequest struct {
	Source  string         `json:"source"`
	Changes []MirrorChange `json:"changes"`
}

// MirrorResult reports, per change of a request in the same order, "" or why it was
// refused (the other changes commit).
type MirrorResult struct {
	Errors []string `json:"errors"`
}

// MirrorInventory lists the objects of one source the store holds, as the keys of
// MirrorChange (KIND/NAMESPACE/NAME), so that a resync deletes those gone from the source.
type MirrorInventory struct {
	Keys []string `json:"keys"`
}
