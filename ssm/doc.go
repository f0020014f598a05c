// Package ssm is a client for the AWS Session Manager data channel: the
// reliable stream, the websocket channel with its handshake and reconnect,
// and the StartSession/ResumeSession/TerminateSession API calls. The bytes on
// the wire (frames, JSON payloads, version compare) are package ssm/wire.
//
// A Session is an io.ReadWriteCloser carrying the bytes of one port session.
// The package takes an aws.Config and knows nothing of keyrings or ssh.
package ssm
