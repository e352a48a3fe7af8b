// Command etcd is the etcd server, built from its Go module so that the control plane the
// Journey tests start needs no download of a prebuilt binary. It only hands over to etcdmain.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
