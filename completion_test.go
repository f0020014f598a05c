package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fakeBinary puts an "ssmproxy" on a fresh PATH that is this test binary
// running run(os.Args[1:]), and returns that PATH.
func fakeBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := "#!/bin/sh\n" + envRunArgv + "=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "ssmproxy"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + ":/usr/bin:/bin"
}

// TestCompletionBash: the bash script ssmproxy prints loads in bash,
// registers a completion for ssmproxy, and completing with it asks the
// binary: commands, flags, and a flag's fixed values.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	path := fakeBinary(t)
	home := t.TempDir()
	script := filepath.Join(t.TempDir(), "ssmproxy.bash")
	gen := exec.Command(filepath.Join(strings.Split(path, ":")[0], "ssmproxy"), "completion", "bash")
	gen.Env = []string{"PATH=" + path, "HOME=" + home}
	out, err := gen.Output()
	if err != nil {
		t.Fatalf("ssmproxy completion bash: %v", err)
	}
	if err := os.WriteFile(script, out, 0o600); err != nil {
		t.Fatal(err)
	}
	// The script drives bash-completion's helpers (_get_comp_words_by_ref),
	// as every distribution's bash has them; .ci/run installs the package.
	bc := "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bc); err != nil {
		if os.Getenv("SSMPROXY_TEST_REQUIRE_BASH_COMPLETION") == "1" {
			t.Fatalf("bash-completion is required: %v", err)
		}
		bc = ""
	}
	// complete LINE prints the candidates bash would offer for LINE.
	complete := func(line string) []string {
		t.Helper()
		prog := `[ -z "$3" ] || source "$3" || exit 10
source "$1" || exit 9
complete -p ssmproxy || exit 8
COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
__start_ssmproxy ssmproxy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf 'reply:%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog, "bash", script, line, bc)
		cmd.Env = []string{"PATH=" + path, "HOME=" + home, "AWS_CONFIG_FILE=" + filepath.Join(home, "config")}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %q: %v\n%s", line, err, b)
		}
		if !strings.Contains(string(b), "-F __start_ssmproxy ssmproxy") {
			t.Fatalf("complete -p ssmproxy does not show the completion function:\n%s", b)
		}
		var got []string
		for _, l := range strings.Split(string(b), "\n") {
			if r, ok := strings.CutPrefix(l, "reply:"); ok && r != "" {
				got = append(got, strings.TrimSpace(r))
			}
		}
		sort.Strings(got)
		return got
	}
	if bc == "" {
		complete("ssmproxy ") // the script loads and registers
		t.Skip("bash-completion is not installed: completions not driven")
	}
	if err := os.WriteFile(filepath.Join(home, "config"), []byte("[default]\nregion=eu-west-1\n[profile work]\n[profile prod-admin]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		line string
		want []string
	}{
		{"ssmproxy con", []string{"connect"}},
		{"ssmproxy cr", []string{"credential-process", "creds"}},
		{"ssmproxy forward --qu", []string{"--quiet"}},
		{"ssmproxy connect --keyring-backend k", []string{"keychain", "keyctl", "kwallet"}},
		{"ssmproxy connect --profile ", []string{"default", "prod-admin", "work"}},
		{"ssmproxy completion ", []string{"bash", "fish", "powershell", "zsh"}},
	} {
		got := complete(c.line)
		if strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("completing %q: got %q, want %q", c.line, got, c.want)
		}
	}
}

// TestCompletionScripts: every shell's script is produced and names the
// binary's completion entry point.
func TestCompletionScripts(t *testing.T) {
	path := fakeBinary(t)
	bin := filepath.Join(strings.Split(path, ":")[0], "ssmproxy")
	for shell, marker := range map[string]string{
		"bash": "__start_ssmproxy", "zsh": "#compdef ssmproxy", "fish": "complete -c ssmproxy",
		"powershell": "Register-ArgumentCompleter",
	} {
		out, err := exec.Command(bin, "completion", shell).Output()
		if err != nil || !strings.Contains(string(out), marker) {
			t.Errorf("completion %s: err %v, output without %q", shell, err, marker)
		}
	}
	if err := exec.Command(bin, "completion", "tcsh").Run(); err == nil {
		t.Error("completion tcsh: want a usage error")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage {
		t.Errorf("completion tcsh: %v, want exit %d", err, exitUsage)
	}
}
