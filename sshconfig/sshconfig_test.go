package sshconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssmproxy/ssmproxy/target"
)

var fleet = []target.Node{
	{ID: "i-0aaaaaaaaaaaaaaa2", Name: "web-2", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa1", Name: "Web-1", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa3", Name: "db", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa4", Name: "DB", PingStatus: "ConnectionLost"},
	{ID: "i-0aaaaaaaaaaaaaaa5", Name: "i-0aaaaaaaaaaaaaaa1", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa6", Name: "we*b", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa7", Name: "my web", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa8", Name: "i-web", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaaaa9", PingStatus: "Online"},
	{ID: "i-0aaaaaaaaaaaaab10", Name: "batch", PingStatus: "Inactive"},
	{ID: "i-0aaaaaaaaaaaaab11", Name: "noagent", PingStatus: target.NotRegistered},
	{ID: "mi-0bbbbbbbbbbbbbbb1", Name: "rack-7", PingStatus: "Online"},
}

const want = Marker + `
# Command: ssmproxy ssh-config --output ~/.ssh/ssmproxy_config
# Include it from ~/.ssh/config, above any Host block. Regenerate rather than edit.

Host batch i-0aaaaaaaaaaaaab10
    HostName i-0aaaaaaaaaaaaab10
    ProxyCommand ssmproxy connect %h %p

Host rack-7 mi-0bbbbbbbbbbbbbbb1
    HostName mi-0bbbbbbbbbbbbbbb1
    ProxyCommand ssmproxy connect %h %p

Host web-1 i-0aaaaaaaaaaaaaaa1
    HostName i-0aaaaaaaaaaaaaaa1
    ProxyCommand ssmproxy connect %h %p

Host web-2 i-0aaaaaaaaaaaaaaa2
    HostName i-0aaaaaaaaaaaaaaa2
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa3
    HostName i-0aaaaaaaaaaaaaaa3
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa4
    HostName i-0aaaaaaaaaaaaaaa4
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa5
    HostName i-0aaaaaaaaaaaaaaa5
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa6
    HostName i-0aaaaaaaaaaaaaaa6
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa7
    HostName i-0aaaaaaaaaaaaaaa7
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa8
    HostName i-0aaaaaaaaaaaaaaa8
    ProxyCommand ssmproxy connect %h %p

Host i-0aaaaaaaaaaaaaaa9
    HostName i-0aaaaaaaaaaaaaaa9
    ProxyCommand ssmproxy connect %h %p

# Any other instance, by its id.
Host i-* mi-*
    ProxyCommand ssmproxy connect %h %p
`

// TestRender: the whole file for a fleet with every kind of bad Name; each
// left-out name is reported with its reason, and the order of the input
// does not matter.
func TestRender(t *testing.T) {
	o := Options{Command: "ssmproxy ssh-config --output ~/.ssh/ssmproxy_config"}
	got, skipped := Render(fleet, o)
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	reasons := map[string]string{}
	for _, s := range skipped {
		reasons[s.ID] = s.String()
	}
	for id, why := range map[string]string{
		"i-0aaaaaaaaaaaaaaa3": "shared by 2", "i-0aaaaaaaaaaaaaaa4": "shared by 2",
		"i-0aaaaaaaaaaaaaaa5": "is an instance id", "i-0aaaaaaaaaaaaaaa6": "Host pattern",
		"i-0aaaaaaaaaaaaaaa7": "Host pattern", "i-0aaaaaaaaaaaaaaa8": "starts like an instance id",
		"i-0aaaaaaaaaaaaab11": "not managed by SSM",
	} {
		if !strings.Contains(reasons[id], why) {
			t.Errorf("%s: reported %q, want %q", id, reasons[id], why)
		}
	}
	if len(skipped) != 7 {
		t.Errorf("skipped %v, want 7", skipped)
	}
	rev := append([]target.Node(nil), fleet...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if again, _ := Render(rev, o); string(again) != string(got) {
		t.Fatal("the output depends on the order of the listing")
	}
}

// TestRenderFilters: --online-only drops offline agents (and reports them),
// --name-prefix keeps only matching Names.
func TestRenderFilters(t *testing.T) {
	got, skipped := Render(fleet, Options{OnlineOnly: true})
	if strings.Contains(string(got), "i-0aaaaaaaaaaaaab10") || strings.Contains(string(got), "i-0aaaaaaaaaaaaaaa4") {
		t.Fatalf("offline agents kept with OnlineOnly:\n%s", got)
	}
	// db alone now: the clash was with an offline DB that is left out.
	if !strings.Contains(string(got), "Host db i-0aaaaaaaaaaaaaaa3\n") {
		t.Fatalf("db lost its alias once DB was filtered out:\n%s", got)
	}
	n := 0
	for _, s := range skipped {
		if strings.Contains(s.Why, "--online-only") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("skipped %v: want the 2 offline agents reported", skipped)
	}
	got, _ = Render(fleet, Options{NamePrefix: "web-"})
	if strings.Count(string(got), "\nHost ") != 3 || !strings.Contains(string(got), "Host web-1 ") || !strings.Contains(string(got), "Host web-2 ") {
		t.Fatalf("--name-prefix web-:\n%s", got)
	}
}

// TestProxyCommandQuoting: the profile and the program reach /bin/sh as
// one word each, and a % survives ssh's token expansion.
func TestProxyCommandQuoting(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{}, "ssmproxy connect %h %p"},
		{Options{Profile: "prod", Region: "eu-west-1"}, "ssmproxy connect --profile prod --region eu-west-1 %h %p"},
		{Options{Profile: "it's $HOME; rm -rf /"}, `ssmproxy connect --profile 'it'\''s $HOME; rm -rf /' %h %p`},
		{Options{Profile: "100%"}, "ssmproxy connect --profile 100%% %h %p"},
		{Options{Program: "/opt/my tools/ssmproxy"}, "'/opt/my tools/ssmproxy' connect %h %p"},
	} {
		if got := ProxyCommand(c.o); got != c.want {
			t.Errorf("%+v: %s, want %s", c.o, got, c.want)
		}
	}
	// A command line with a newline stays one comment line.
	got, _ := Render(nil, Options{Command: "ssmproxy ssh-config --tag a=b\nHost *"})
	if strings.Contains(string(got), "\nHost *\n") {
		t.Fatalf("header broke out of its comment:\n%s", got)
	}
}

// TestWrite: a new file, the same bytes again (unchanged, not rewritten),
// new bytes (replaced), a file of the user's (refused, untouched), a
// directory (refused); no temporary file is left behind.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ssmproxy_config")
	data, _ := Render(fleet, Options{Command: "x"})
	if changed, err := Write(p, data); err != nil || !changed {
		t.Fatalf("first write: changed %v, %v", changed, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != FileMode {
		t.Fatalf("mode %v", st.Mode())
	}
	if changed, err := Write(p, data); err != nil || changed {
		t.Fatalf("same bytes: changed %v, %v", changed, err)
	}
	st2, _ := os.Stat(p)
	if !os.SameFile(st, st2) {
		t.Fatal("an unchanged file was replaced")
	}
	data2, _ := Render(fleet[:3], Options{Command: "x"})
	if changed, err := Write(p, data2); err != nil || !changed {
		t.Fatalf("new bytes: changed %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(p); string(b) != string(data2) {
		t.Fatal("content not replaced")
	}

	mine := filepath.Join(dir, "config")
	own := "Host bastion\n    User me\n"
	if err := os.WriteFile(mine, []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(mine, data); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("user's file: %v, want ErrNotOurs", err)
	}
	// The marker further down does not count.
	if err := os.WriteFile(mine, []byte("Host x\n"+Marker+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(mine, data); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("marker not first: %v, want ErrNotOurs", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(empty, data); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("empty file: %v, want ErrNotOurs", err)
	}
	if _, err := Write(dir, data); err == nil {
		t.Fatal("a directory was accepted")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}

// TestCheckInclude: the forms of Include ssh_config(5) allows.
func TestCheckInclude(t *testing.T) {
	home := t.TempDir()
	out := filepath.Join(home, ".ssh", "ssmproxy_config")
	conf := filepath.Join(home, ".ssh", "config")
	if err := os.MkdirAll(filepath.Dir(conf), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		config string
		want   Coverage
	}{
		{"Include ~/.ssh/ssmproxy_config\nHost x\n", Included},
		{"include ssmproxy_config\n", Included},
		{"Include=" + out + "\n", Included},
		{"  Include other \"~/.ssh/ssmproxy_*\"\n", Included},
		{"Include ~/.ssh/*\n", Included},
		{"# Include ~/.ssh/ssmproxy_config\n", Missing},
		{"Include ~/.ssh/other_config\n", Missing},
		{"Host x\n  Include ~/.ssh/ssmproxy_config\n", InBlock},
		{"Match all\nInclude ssmproxy_config\n", InBlock},
		{"IncludeX ssmproxy_config\n", Missing},
	} {
		if err := os.WriteFile(conf, []byte(c.config), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := CheckInclude(conf, out, home)
		if err != nil || got != c.want {
			t.Errorf("%q: %v %v, want %v", c.config, got, err, c.want)
		}
	}
	if got, _ := CheckInclude(filepath.Join(home, "nope"), out, home); got != NoSSHConfig {
		t.Errorf("no config: %v", got)
	}
	if l := IncludeLine(out, home); l != "Include ~/.ssh/ssmproxy_config" {
		t.Errorf("IncludeLine %q", l)
	}
	if l := IncludeLine("/tmp/a b/x", home); l != `Include "/tmp/a b/x"` {
		t.Errorf("IncludeLine %q", l)
	}
}
