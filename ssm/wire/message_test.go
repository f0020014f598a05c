package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestReadMessage(t *testing.T) {
	const limit = 4096
	buf := make([]byte, 0, 16)
	for _, n := range []int{0, 1, 16, 17, 1000, limit} {
		msg := bytes.Repeat([]byte{byte(n)}, n)
		got, err := ReadMessage(iotest.OneByteReader(bytes.NewReader(msg)), buf, limit)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: got %d bytes, %v", n, len(got), err)
		}
		buf = got
	}
	// The storage grown for a message is reused by the next one.
	got, err := ReadMessage(bytes.NewReader([]byte("x")), buf, limit)
	if err != nil || string(got) != "x" || &got[0] != &buf[:1][0] {
		t.Fatalf("storage not reused: %q %v", got, err)
	}
}

func TestReadMessageBound(t *testing.T) {
	const limit = 100
	for _, capacity := range []int{0, 10, 101, 4096} {
		r := bytes.NewReader(make([]byte, 1000))
		got, err := ReadMessage(r, make([]byte, 0, capacity), limit)
		if !errors.Is(err, ErrMessageTooLarge) || len(got) != 0 {
			t.Fatalf("cap %d: got %d bytes, %v", capacity, len(got), err)
		}
		// It stops reading at the first byte over the bound.
		if read := 1000 - r.Len(); read != limit+1 {
			t.Fatalf("cap %d: read %d bytes", capacity, read)
		}
	}
}

func TestReadMessageError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader([]byte("ab")), iotest.ErrReader(boom))
	got, err := ReadMessage(r, nil, 100)
	if !errors.Is(err, boom) || string(got) != "ab" {
		t.Fatalf("got %q, %v", got, err)
	}
}
