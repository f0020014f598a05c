package redact

import "io"

// Writer passes a child process's stderr to w through the redactor: each
// write is redacted with Lines as it comes (a prompt without a newline still
// shows at once). A secret the child splits across two writes is seen in
// halves; shells and most programs write a line at once.
type Writer struct{ w io.Writer }

// NewWriter returns a Writer onto w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write redacts p and writes it on; it reports all of p as written, so a
// child's output is never cut short by what redaction removed.
func (x *Writer) Write(p []byte) (int, error) {
	if _, err := io.WriteString(x.w, Lines(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
