// Package archtest holds one test: the import rules of docs/architecture.md
// ("Arrows"), checked against what `go list` reports, so the package map
// holds by construction and not by habit. It has no code of its own.
package archtest
