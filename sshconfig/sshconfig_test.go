package sshconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRender: clashing, unusable and id-like names are left out and
// listed, their nodes keep the id alias; ProxyCommand arguments are
// quoted for the shell and % doubled; the order of the input does not
// change the output.
func TestRender(t *testing.T) {
	hosts := []Host{
		{ID: "i-0000000000000000b", Name: "db"},
		{ID: "i-0000000000000000a", Name: "web-1", Platform: "Linux Amazon Linux"},
		{ID: "i-0000000000000000c", Name: "db"},
		{ID: "mi-0000000000000000d", Name: "lab *"},
		{ID: "i-0000000000000000e", Name: "i-0000000000000000a"},
		{ID: "i-0000000000000000f"},
	}
	text, skipped := Render(hosts, []string{"--profile", "it's 100%"}, "ssmproxy ssh-config")
	rev := append([]Host(nil), hosts...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if again, _ := Render(rev, []string{"--profile", "it's 100%"}, "ssmproxy ssh-config"); again != text {
		t.Error("the input order changed the output")
	}
	if !strings.HasPrefix(text, Marker+"\n") {
		t.Error("no marker line")
	}
	for _, want := range []string{
		"# Linux Amazon Linux\nHost web-1 i-0000000000000000a\n    HostName i-0000000000000000a\n    ProxyCommand ssmproxy connect --profile 'it'\\''s 100%%' %h %p\n",
		"Host i-0000000000000000b\n", "Host i-0000000000000000c\n", "Host mi-0000000000000000d\n", "Host i-0000000000000000e\n",
		"Host i-0000000000000000f\n", "\nHost i-* mi-*\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Host db") || strings.Contains(text, "lab") {
		t.Errorf("a left-out name is in the output:\n%s", text)
	}
	var got []string
	for _, s := range skipped {
		got = append(got, s.Name+":"+strings.Join(s.IDs, ","))
	}
	if want := "db:i-0000000000000000b,i-0000000000000000c i-0000000000000000a:i-0000000000000000e lab *:mi-0000000000000000d"; strings.Join(got, " ") != want {
		t.Errorf("skipped %q, want %q", got, want)
	}
}

// TestWrite: created 0644, unchanged on the same text, replaced on new
// text, and a file without the marker refused and left as it was.
func TestWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ssmproxy_config")
	text := Marker + "\nHost a\n"
	if ch, err := Write(p, text); !ch || err != nil {
		t.Fatalf("first write: %v %v", ch, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}
	if ch, err := Write(p, text); ch || err != nil {
		t.Fatalf("same text: %v %v", ch, err)
	}
	if ch, err := Write(p, text+"Host b\n"); !ch || err != nil {
		t.Fatalf("new text: %v %v", ch, err)
	}
	if err := os.WriteFile(p, []byte("Host mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(p, text); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("foreign file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "Host mine\n" {
		t.Fatal("foreign file changed")
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// TestIncluded: an Include before any Host line covers the file by
// absolute path, ~/, a path relative to ~/.ssh or a glob; one inside a
// Host block does not.
func TestIncluded(t *testing.T) {
	home := t.TempDir()
	file := filepath.Join(home, ".ssh", "ssmproxy_config")
	conf := filepath.Join(t.TempDir(), "config")
	for text, want := range map[string]bool{
		"Include " + file + "\nHost *\n":             true,
		"# c\nInclude ~/.ssh/ssmproxy_config\n":      true,
		"Include=ssmproxy_config\n":                  true,
		"Include other ~/.ssh/ssm*\n":                true,
		"Host x\n  Include ~/.ssh/ssmproxy_config\n": false,
		"Include ~/.ssh/other\n":                     false,
	} {
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := Included(conf, home, file); got != want || err != nil {
			t.Errorf("%q: %v %v, want %v", text, got, err, want)
		}
	}
	if got, err := Included(filepath.Join(home, "none"), home, file); got || err != nil {
		t.Errorf("missing config: %v %v", got, err)
	}
	if l := IncludeLine(home, file); l != "Include ~/.ssh/ssmproxy_config" {
		t.Errorf("IncludeLine %q", l)
	}
}
