package redact

import (
	"context"
	"fmt"
	"log/slog"
)

// Handler wraps a slog.Handler so that every record passes through String
// before it is written: the message, every string attribute, every error
// and every other value that formats as text (fmt.Sprint of it), in groups
// too. Numbers, booleans, times and durations pass as they are. Every logger
// ssmproxy builds (stderr and --log-file) is wrapped (docs/credentials.md
// 7.3).
type Handler struct{ next slog.Handler }

// NewHandler returns next wrapped.
func NewHandler(next slog.Handler) *Handler { return &Handler{next: next} }

// Enabled is next's.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle redacts r and hands it on.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(Attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts the attributes once, here.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = Attr(a)
	}
	return &Handler{next: h.next.WithAttrs(red)}
}

// WithGroup is next's, still wrapped.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(String(name))}
}

// Attr returns a with its key and value redacted; LogValuers are resolved
// first, so a type that redacts itself is asked to.
func Attr(a slog.Attr) slog.Attr {
	a.Key = String(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]slog.Attr, len(g))
		for i, ga := range g {
			red[i] = Attr(ga)
		}
		a.Value = slog.GroupValue(red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			a.Value = slog.StringValue(String(x.Error()))
		case nil:
			a.Value = v
		case []byte:
			// As text: %+v would print numbers no rule can match.
			a.Value = slog.StringValue(String(string(x)))
		default:
			// Structs, slices, maps, Stringers: what a text or JSON handler
			// would print of them, redacted.
			a.Value = slog.StringValue(String(fmt.Sprintf("%+v", x)))
		}
	default:
		a.Value = v
	}
	return a
}
