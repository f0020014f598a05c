package ssm

// Tracer receives the flight recorder's events (docs/trace.md): every
// binary websocket message the session sends or receives, and the moments
// of its life (a leg up or lost, each ResumeSession, the end). It is
// optional: with none, the data path pays one nil check per message.
//
// Implementations must not block (the calls come from the leg's reader
// and writer goroutines) and must not keep msg: it is the leg's buffer.
// They may read only msg's header and, for acknowledgements, the acked
// sequence number: the payload is the user's data and is never recorded.
// Event attribute values can hold service and network error text; the
// tracer passes them through the redactor.
type Tracer interface {
	Frame(out bool, msg []byte)
	Event(kind string, attrs ...any)
}

// Trace event kinds (docs/trace.md 2).
const (
	TraceSessionStart = "session-start"
	TraceLegUp        = "leg-up"
	TraceLegLost      = "leg-lost"
	TraceResumeCall   = "resume-call"
	TraceResumed      = "resumed"
	TraceSessionEnd   = "session-end"
)

func (c *Config) trace(kind string, attrs ...any) {
	if c.Trace != nil {
		c.Trace.Event(kind, attrs...)
	}
}
