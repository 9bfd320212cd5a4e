// Package policy is podnet's network policy layer without the data path: it parses
// Kubernetes NetworkPolicy documents (networking.k8s.io/v1, YAML or JSON) into
// api.NetworkPolicy, validates policies as the Kubernetes API server does, matches label
// selectors, and decides single connections with Kubernetes semantics.
//
// Decide is the reference evaluator: the specification in code, written to be read, not
// to be fast. `podnet policy explain` uses it, and the data path tests use it as the
// oracle of their truth tables.
//
// Only Parse depends on the Kubernetes modules (k8s.io/api for the document schema,
// sigs.k8s.io/yaml and sigs.k8s.io/json to decode it strictly); everything after it
// works on the api types.
package policy
