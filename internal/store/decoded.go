package store

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/podnet/podnet/api"
)

// DecodedServices keeps each service record of a store decoded, with the bytes it was
// decoded from: a reader whose record has the same bytes gets a copy of it instead of
// decoding the JSON again (the agent's periodic reconcile and each metrics scrape read
// every service: at 5,000 services the decoding alone took about 60 ms of CPU). Records
// are known by their keys in the store; a full listing drops the keys it did not see
// (Keep). The zero value is ready; it is safe for concurrent use.
type DecodedServices struct {
	mu    sync.Mutex
	byKey map[string]decodedService
}

type decodedService struct {
	raw []byte
	svc api.Service
}

// Decode returns the service of record v under key, a copy that the caller owns:
// decode's result for those bytes, called only when they differ from the last ones
// decoded under key.
func (d *DecodedServices) Decode(key string, v []byte, decode func([]byte) (api.Service, error)) (api.Service, error) {
	d.mu.Lock()
	got, ok := d.byKey[key]
	d.mu.Unlock()
	if ok && bytes.Equal(got.raw, v) {
		return got.svc.Clone(), nil
	}
	svc, err := decode(v)
	if err != nil {
		return api.Service{}, err
	}
	d.mu.Lock()
	if d.byKey == nil {
		d.byKey = map[string]decodedService{}
	}
	d.byKey[key] = decodedService{raw: bytes.Clone(v), svc: svc.Clone()}
	d.mu.Unlock()
	return svc, nil
}

// Keep drops the records whose keys are not in seen.
func (d *DecodedServices) Keep(seen map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range d.byKey {
		if !seen[k] {
			delete(d.byKey, k)
		}
	}
}

// decodeJSONService decodes a service record as bbolt holds it.
func decodeJSONService(v []byte) (svc api.Service, err error) {
	err = json.Unmarshal(v, &svc)
	return svc, err
}
