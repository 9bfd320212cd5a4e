package etcdstore

// RoundTrips is how many requests s has sent to etcd.
func RoundTrips(s *Store) int64 { return s.RoundTrips() }
