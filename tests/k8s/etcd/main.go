// Command etcd is a minimal etcd server main for the operator's test control plane.
//
// It delegates to the upstream etcdmain entry point so flags and behaviour are
// exactly those of the released etcd server of the pinned version.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
