// Package wire is the Session Manager data channel's wire format and nothing
// else: the binary frame codec (docs/protocol.md section 4), the JSON payloads of
// acks, handshake, flags and the opening frame (sections 3, 5 and 6), dotted
// version comparison (section 11) and reading one websocket message into a
// reusable buffer. It starts no goroutines and does no I/O beyond a reader
// handed in.
//
// It exists as its own package because it is the only part of the client the
// fake (fakeaws and its agent) may import: the fake must implement the
// service and the agent independently of the client's stream logic, so that
// two implementations meet on the wire. What they share is pinned by the
// golden vectors in testdata/frames.json, made with the official plugin's
// code, so a mistake here cannot hide by being made on both sides.
package wire
