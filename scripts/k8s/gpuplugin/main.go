// gpuplugin: a device plugin for the local cluster's real kubelet. It advertises N devices of a resource
// (nvidia.com/gpu by default) through the kubelet's device-plugin API (v1beta1), exactly as NVIDIA's plugin
// does, and on Allocate hands the container the devices' ids in NVIDIA_VISIBLE_DEVICES, as NVIDIA's plugin
// does for the container toolkit. There is no hardware behind the ids: what it shows is the kubelet's
// accounting (a pod gets exactly the devices it was allocated; with none free, a pod stays Pending).
//
//	gpuplugin --count 2 [--resource nvidia.com/gpu] [--dir /var/lib/kubelet/device-plugins]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list once; the devices never change health, so the stream then idles until
// the kubelet closes it.
func (p *plugin) ListAndWatch(_ *pluginapi.Empty, s pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		log.Printf("allocate %s", strings.Join(c.DevicesIds, ","))
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ",")},
		})
	}
	return resp, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func register(dir, endpoint, resource string) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: resource})
	return err
}

// inode of the kubelet's socket: a new one means the kubelet restarted and forgot its plugins.
func inode(path string) uint64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

func main() {
	count := flag.Int("count", 2, "devices to advertise")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin folder")
	flag.Parse()
	p := &plugin{}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("GPU-local-%d", i), Health: pluginapi.Healthy})
	}
	endpoint := "cifar-hpo-gpu.sock"
	sock := filepath.Join(*dir, endpoint)
	// The kubelet makes this folder when it starts; the plugin may be first.
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatalf("mkdir %s: %v", *dir, err)
	}
	// serve (re)creates our socket: a starting kubelet empties its device-plugin folder, ours included, so each
	// new kubelet gets a new server before it is asked to register it (as NVIDIA's plugin does).
	var srv *grpc.Server
	serve := func() error {
		if srv != nil {
			srv.Stop()
		}
		_ = os.Remove(sock)
		lis, err := net.Listen("unix", sock)
		if err != nil {
			return err
		}
		srv = grpc.NewServer()
		pluginapi.RegisterDevicePluginServer(srv, p)
		go func() { _ = srv.Serve(lis) }()
		return nil
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	kubeletSock := filepath.Join(*dir, "kubelet.sock")
	registered := uint64(0)
	for {
		if ino := inode(kubeletSock); ino != 0 && ino != registered {
			if err := serve(); err != nil {
				log.Fatalf("listen %s: %v", sock, err)
			}
			if err := register(*dir, endpoint, *resource); err != nil {
				log.Printf("register with the kubelet: %v (retrying)", err)
			} else {
				registered = ino
				log.Printf("registered %d x %s", *count, *resource)
			}
		}
		select {
		case <-stop:
			if srv != nil {
				srv.Stop()
			}
			_ = os.Remove(sock)
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}
