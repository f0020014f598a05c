package wire

import (
	"errors"
	"io"
)

// ErrMessageTooLarge is returned by ReadMessage for a websocket message
// longer than its bound.
var ErrMessageTooLarge = errors.New("websocket message too large")

// ReadMessage reads one websocket message (the reader gorilla/websocket's
// NextReader returns) into buf, reusing its storage, and returns it. A
// message longer than limit bytes is not kept: ReadMessage stops after
// limit+1 bytes and returns buf[:0] and ErrMessageTooLarge, leaving the rest
// unread (gorilla skips it when the next message is requested).
func ReadMessage(r io.Reader, buf []byte, limit int) ([]byte, error) {
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		end := cap(buf)
		if end > limit+1 {
			end = limit + 1
		}
		n, err := r.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return buf[:0], ErrMessageTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
