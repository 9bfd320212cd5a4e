package store

// OpenBoltTimeout is OpenBolt with a shorter wait for the file lock.
var OpenBoltTimeout = openBolt
