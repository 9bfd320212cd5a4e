package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logger adapts GoBGP's logger interface to slog. It passes on warnings and errors
// only, unless GoBGP raises its own level (SetLevel): GoBGP reports every session
// state change and connection attempt at info and debug.
type logger struct {
	l     *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel
}

var _ gobgplog.Logger = (*logger)(nil)

func newLogger(l *slog.Logger) *logger {
	lg := &logger{l: l.With("lib", "gobgp")}
	lg.level.Store(uint32(gobgplog.WarnLevel))
	return lg
}

// Panic and Fatal mark what GoBGP considers a bug in itself: logrus would panic or
// exit the process; the adapter logs the message and panics.
func (l *logger) Panic(msg string, fields gobgplog.Fields) {
	l.log(gobgplog.PanicLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s", msg))
}

func (l *logger) Fatal(msg string, fields gobgplog.Fields) {
	l.log(gobgplog.FatalLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s", msg))
}

func (l *logger) Error(msg string, fields gobgplog.Fields) {
	l.log(gobgplog.ErrorLevel, slog.LevelError, msg, fields)
}

func (l *logger) Warn(msg string, fields gobgplog.Fields) {
	l.log(gobgplog.WarnLevel, slog.LevelWarn, msg, fields)
}

func (l *logger) Info(msg string, fields gobgplog.Fields) {
	l.log(gobgplog.InfoLevel, slog.LevelInfo, msg, fields)
}

func (l *logger) Debug(msg string, fields gobgplog.Fields) {
	l.log(gobgplog.DebugLevel, slog.LevelDebug, msg, fields)
}

func (l *logger) SetLevel(level gobgplog.LogLevel) { l.level.Store(uint32(level)) }

func (l *logger) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(l.level.Load()) }

// demoted are warnings GoBGP logs that say nothing to a podnet operator: they are
// passed on as debug messages.
var demoted = map[string]bool{
	// Every start, on kernels that refuse IP_TTL on a socket before it listens:
	// TTL 255 only matters for TTL security (GTSM), which podnet does not use.
	"cannot set TTL (255) for TCPListener": true,
	// A peer withdrew a path GoBGP never installed: one it refused (our own AS in the
	// path), as a router of another AS sends back the nodes' blocks.
	"No matching path for withdraw found, may be path was not installed into table": true,
}

// log emits msg with fields as attributes sorted by key, when level is enabled.
func (l *logger) log(level gobgplog.LogLevel, sl slog.Level, msg string, fields gobgplog.Fields) {
	if level == gobgplog.WarnLevel && demoted[msg] {
		level, sl = gobgplog.DebugLevel, slog.LevelDebug
	}
	if level > l.GetLevel() {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	l.l.LogAttrs(context.Background(), sl, msg, attrs...)
}
