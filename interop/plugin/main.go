// Command session-manager-plugin is the official AWS Session Manager plugin,
// built from its published source at the version pinned in go.mod, so the
// e2e suite can run a real client against fakeaws (docs/fakeaws.md, "Real
// clients check the fake"). Nothing here is ssmproxy code: this module only
// pins the plugin and its dependencies and calls the plugin's entry point,
// exactly as the plugin's own src/sessionmanagerplugin-main/main.go does.
package main

import (
	"os"

	"github.com/aws/session-manager-plugin/src/sessionmanagerplugin/session"
	_ "github.com/aws/session-manager-plugin/src/sessionmanagerplugin/session/portsession"
	_ "github.com/aws/session-manager-plugin/src/sessionmanagerplugin/session/shellsession"
)

func main() {
	session.ValidateInputAndStartSession(os.Args, os.Stdout)
}
