// Command dist packs the binaries make dist built into release archives,
// reproducibly: the same binaries, version and commit time give the same
// bytes (docs/platforms.md 1).
//
//	go run ./internal/dist -version V -epoch SECONDS -out dist BUILD_DIR...
//
// Each BUILD_DIR is named OS_ARCH and holds ssmproxy (ssmproxy.exe on
// windows). The archive ssmproxy_V_OS_ARCH.tar.gz (.zip for windows) holds
// the binary, README.md and LICENSE when present, under one top directory
// of the same name, every entry with the commit's time, fixed owner and
// mode, in sorted order; gzip carries no name and no time. SHA256SUMS, in
// sha256sum -c format, lists every archive.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	version := flag.String("version", "", "version to name the archives with")
	epoch := flag.Int64("epoch", 0, "commit time, seconds since 1970 (SOURCE_DATE_EPOCH)")
	out := flag.String("out", "dist", "output directory")
	docs := flag.String("docs", "README.md,LICENSE", "files to include when present")
	flag.Parse()
	if *version == "" || *epoch <= 0 || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: dist -version V -epoch SECONDS [-out DIR] BUILD_DIR...")
		os.Exit(2)
	}
	var extra []string
	for _, d := range strings.Split(*docs, ",") {
		if _, err := os.Stat(d); err == nil {
			extra = append(extra, d)
		}
	}
	names, err := packAll(*out, *version, time.Unix(*epoch, 0).UTC(), flag.Args(), extra)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
	for _, n := range names {
		fmt.Println(filepath.Join(*out, n))
	}
}
