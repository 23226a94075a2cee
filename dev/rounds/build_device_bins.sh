#!/usr/bin/env bash
# Builds what a device call runs, here (nvcc, no GPU): the library, CLI and GPU test binaries in
# build-cuda, the kernel labs, the graph-chain lab and the tolerance tools in build-lab, and
# build-lab/bins.tar.xz — build-cuda's binaries packed small enough to travel with the tree (the
# device tool carries at most 64 MiB; the run_*.sh scripts unpack it first). Then: run(command="bash
# dev/rounds/run_roundN.sh", carry=["build-lab"]). build-lab/ is ignored locally
# (.git/info/exclude), never committed.
set -eu
cd "$(dirname "$0")/../.."
gpu_tests=$(ls tests/gpu/test_gpu_*.c | sed 's|tests/gpu/\(.*\)\.c|build-cuda/tests-gpu/\1|')
# the tests' .cu objects named too: the tolerance tools below link them (a goal is not deleted as
# an intermediate file)
gpu_objs=$(ls tests/gpu/*.cu | sed 's|\(.*\)\.cu|build-cuda/obj/\1.o|')
make -j"$(nproc)" BUILD=build-cuda all $gpu_tests $gpu_objs
mkdir -p build-lab
arch="-gencode=arch=compute_90a,code=sm_90a"
nvcc -O3 -std=c++17 -Iinclude $arch dev/kernels/sm90_w4a8_gemm.cu -o build-lab/sm90_lab
nvcc -O3 -std=c++17 -Iinclude $arch dev/kernels/decode_w4a8_gemm.cu -o build-lab/decode_lab
nvcc -O3 -std=c++17 -Iinclude $arch dev/kernels/fused_decode_lab.cu -o build-lab/fused_lab
nvcc -O3 -std=c++17 $arch dev/kernels/stream_lab.cu -o build-lab/stream_lab
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Iinclude -Isrc -I/usr/local/cuda/include \
  dev/kernels/chain_lab.c -o build-lab/chain_lab build-cuda/libw4a8moe.a -l:libjansson.a -lm -ldl \
  -pthread -L/usr/local/cuda/lib64 -lcudart_static -lrt -lstdc++
for tool in tol_replay flip_probe; do # the GPU tolerance's replay and its host-side reading
  cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused -DW4A8MOE_WITH_CUDA=1 -Iinclude -Isrc -Itests \
    -I/usr/local/cuda/include dev/kernels/$tool.c -o build-lab/$tool build-cuda/obj/tests/gpu/*.o \
    build-cuda/libw4a8moe.a -l:libjansson.a -lm -ldl -pthread -L/usr/local/cuda/lib64 -lcudart_static -lrt -lstdc++
done
tar cf - build-cuda/w4a8moe build-cuda/libw4a8moe.so build-cuda/tests-gpu | xz -9 -T0 > build-lab/bins.tar.xz
du -ch build-lab/* | tail -1
