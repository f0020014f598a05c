//go:build unix

package e2e

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ssmproxy/ssmproxy/internal/rig"
)

// postgres is a throwaway PostgreSQL server on 127.0.0.1, from Debian's
// postgresql package.
type postgres struct {
	bin   string // the server's bin directory (initdb, postgres, psql, pgbench)
	port  string
	psqls atomic.Int64 // psql processes run
}

// pgBinDir finds the newest /usr/lib/postgresql/VERSION/bin with initdb
// and postgres in it (Debian keeps them off PATH).
func pgBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		ok := true
		for _, b := range []string{"initdb", "postgres", "psql"} {
			if _, err := os.Stat(filepath.Join(d, b)); err != nil {
				ok = false
			}
		}
		if ok {
			return d
		}
	}
	return ""
}

// requirePostgres skips when the server is not installed, or fails under
// SSMPROXY_E2E_REQUIRE_POSTGRES=1 (set by .ci/run after installing
// postgresql).
func requirePostgres(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("SSMPROXY_E2E_REQUIRE_POSTGRES") == "1" {
		t.Fatalf("PostgreSQL is required (SSMPROXY_E2E_REQUIRE_POSTGRES=1): %s", why)
	}
	t.Skipf("PostgreSQL server not available (%s): apt-get install postgresql", why)
}

// startPostgres runs initdb and the server in a temporary directory, with
// trust authentication for local TCP and the unix socket in that directory.
// The server refuses to run as root, so under root both run as the
// postgres user that Debian's package creates.
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		requirePostgres(t, "no /usr/lib/postgresql/*/bin/{initdb,postgres,psql}")
	}
	var cred *syscall.Credential
	dir, err := os.MkdirTemp("", "ssmproxy-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			requirePostgres(t, "running as root and no postgres user to run the server as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	pgCmd := func(ctx context.Context, name string, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "HOME=" + dir}
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return cmd
	}
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := pgCmd(ctx, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	logBuf := &rig.SyncBuffer{}
	srv := pgCmd(context.Background(), "postgres", "-D", data, "-h", "127.0.0.1", "-p", port, "-k", dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=40")
	srv.Stdout, srv.Stderr = logBuf, logBuf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = srv.Process.Kill()
			<-done
		}
	})
	if err := rig.WaitTCP("127.0.0.1:"+port, 30*time.Second); err != nil {
		t.Fatalf("postgres not listening: %v\n%s", err, logBuf)
	}
	return &postgres{bin: bin, port: port}
}

// psql runs psql against 127.0.0.1:port (through forward, in this test)
// with unaligned, tuples-only output and stops on the first error.
func (pg *postgres) psql(ctx context.Context, port, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, "psql"),
		append([]string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d", "postgres"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "PGCONNECT_TIMEOUT=20"}
	cmd.Stdin = strings.NewReader(stdin)
	pg.psqls.Add(1)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("psql %q: %v: %s", args, err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestForwardPostgres: a real PostgreSQL server behind the fake agent
// (realistic agent, mux mode), reached with psql and pgbench through
// `ssmproxy forward -L`: a 10k-row table made by generate_series, queries
// with exact answers, 10k rows read back, 2 MB uploaded with \copy, 8 psql
// processes at once, pgbench with 8 clients; then SIGTERM exits 0 after
// TerminateSession (issue 8, Tests and proof).
func TestForwardPostgres(t *testing.T) {
	pg := startPostgres(t)
	f := startFake(t)
	fw := startForward(t, f.environ(), 1, target, "-L", "0:localhost:"+pg.port)
	_, lport, err := net.SplitHostPort(fw.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q := func(sql string) string {
		t.Helper()
		out, err := pg.psql(ctx, lport, "", "-c", sql)
		if err != nil {
			t.Fatalf("%v (forward: %s)", err, tail(fw.stderr.String()))
		}
		return out
	}
	start := time.Now()

	// A table made on the server, queried with answers computed here.
	const rows = 10000
	q("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)")
	q(fmt.Sprintf("INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, %d) AS i", rows))
	var all []string
	for i := 1; i <= rows; i++ {
		all = append(all, md5hex(strconv.Itoa(i)))
	}
	if got := q("SELECT count(*) FROM t"); got != strconv.Itoa(rows) {
		t.Errorf("count(*) = %q, want %d", got, rows)
	}
	if got, want := q("SELECT sum(id) FROM t"), strconv.Itoa(rows*(rows+1)/2); got != want {
		t.Errorf("sum(id) = %q, want %s", got, want)
	}
	if got, want := q("SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t"), md5hex(strings.Join(all, ",")); got != want {
		t.Errorf("md5 of string_agg = %q, want %s", got, want)
	}
	// Every row back through the tunnel (330 kB).
	if got := strings.Split(q("SELECT v FROM t ORDER BY id"), "\n"); strings.Join(got, ",") != strings.Join(all, ",") {
		t.Errorf("SELECT v: %d lines, not the %d md5 values in order", len(got), rows)
	}

	// 2 MB the other way: \copy from psql's stdin, checked on the server.
	var copyIn strings.Builder
	var up []string
	for i := 1; i <= 20000; i++ {
		b := make([]byte, 48)
		_, _ = rand.Read(b)
		v := hex.EncodeToString(b)
		up = append(up, v)
		fmt.Fprintf(&copyIn, "%d\t%s\n", i, v)
	}
	q("CREATE TABLE up (id int PRIMARY KEY, v text NOT NULL)")
	if _, err := pg.psql(ctx, lport, copyIn.String(), "-c", `\copy up FROM pstdin`); err != nil {
		t.Fatal(err)
	}
	if got, want := q("SELECT count(*) || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM up"), fmt.Sprintf("%d %s", len(up), md5hex(strings.Join(up, ","))); got != want {
		t.Errorf("uploaded rows: %q, want %q", got, want)
	}

	// 8 psql processes at once, each its own TCP connection and smux stream,
	// each with several statements.
	var wg sync.WaitGroup
	for k := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n, sum int
			var vs []string
			for i := 1; i <= rows; i++ {
				if i%8 == k {
					n, sum = n+1, sum+i
					vs = append(vs, all[i-1])
				}
			}
			where := fmt.Sprintf(" FROM t WHERE id %% 8 = %d", k)
			out, err := pg.psql(ctx, lport, "", "-c", "SELECT count(*)"+where, "-c", "SELECT sum(id)"+where,
				"-c", "SELECT md5(string_agg(v, ',' ORDER BY id))"+where, "-c", "SELECT pg_sleep(0.5)")
			want := fmt.Sprintf("%d\n%d\n%s", n, sum, md5hex(strings.Join(vs, ",")))
			if err != nil {
				t.Errorf("psql %d: %v", k, err)
			} else if out != want {
				t.Errorf("psql %d: %q, want %q", k, out, want)
			}
		}()
	}
	wg.Wait()
	t.Logf("psql part: %v", time.Since(start).Round(time.Millisecond))

	// pgbench, when the package has it: client-side data generation (COPY
	// up the tunnel), then 8 clients for 5 s.
	if pgbench := filepath.Join(pg.bin, "pgbench"); fileExists(pgbench) {
		pb := func(args ...string) string {
			t.Helper()
			cmd := exec.CommandContext(ctx, pgbench, append([]string{"-h", "127.0.0.1", "-p", lport, "-U", "postgres"}, args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "PGCONNECT_TIMEOUT=20"}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench %q: %v\n%s", args, err, out)
			}
			return string(out)
		}
		pbStart := time.Now()
		pb("-i", "-s", "1", "-q", "postgres")
		initDur := time.Since(pbStart)
		out := pb("-c", "8", "-j", "2", "-T", "5", "postgres")
		tps := regexp.MustCompile(`tps = ([0-9.]+)`).FindStringSubmatch(out)
		done := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
		failed := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out)
		if tps == nil || done == nil || done[1] == "0" || (failed != nil && failed[1] != "0") {
			t.Errorf("pgbench: no transactions, or failed ones:\n%s", out)
		} else {
			t.Logf("pgbench -i -s 1: %v; pgbench -c 8 -j 2 -T 5: %s transactions, tps %s", initDur.Round(time.Millisecond), done[1], tps[1])
		}
		if got := q("SELECT count(*) FROM pgbench_accounts"); got != "100000" {
			t.Errorf("pgbench_accounts has %s rows, want 100000", got)
		}
	} else {
		t.Logf("no pgbench in %s: skipped that part", pg.bin)
	}

	if code := fw.stop(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0: %s", code, fw.stderr)
	}
	st := f.stats()
	if n := st.API["TerminateSession"]["200"]; n != 1 {
		t.Errorf("%d TerminateSession calls after SIGTERM, want 1", n)
	}
	if n := st.API["StartSession"]["200"]; n != 1 {
		t.Errorf("%d StartSession calls, want 1: every connection rides the one session", n)
	}
	// Each psql (and each pgbench client) is one smux stream the agent
	// accepted and dialled.
	if n, want := st.MuxStreamsAccepted, pg.psqls.Load(); n < want || st.MuxDialsFailed != 0 {
		t.Errorf("the fake agent accepted %d smux streams (%d dials failed), want at least %d (one per psql) and no failure",
			n, st.MuxDialsFailed, want)
	}
	t.Logf("%d psql processes, %d smux streams accepted, peak %d KiB buffered in the agent's smux",
		pg.psqls.Load(), st.MuxStreamsAccepted, st.MuxBufferedPeak>>10)
	checkNoViolations(t, f)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
