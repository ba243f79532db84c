package gateway

// Log field keys, in one place so logs stay greppable across releases.
const (
	logAddr       = "addr"
	logEventLoops = "event_loops"
	logKind       = "kind"
	logPanic      = "panic"
	logPath       = "path"
	logReason     = "reason"
	logSocket     = "socket"
	logStack      = "stack"
	logStatus     = "status"
	logSuppressed = "suppressed"
)
