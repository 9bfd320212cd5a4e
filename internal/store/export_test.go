package store

// OpenBoltTimeout is OpenBolt with a shorter wait for the file lock.
var OpenBoltTimeout = openBolt

// Pending is how many watches of b have a change waiting to be reported.
func Pending(b *Bolt) int {
	l := &b.local
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for w := range l.watchers {
		n += len(w.pending)
	}
	return n
}
