"""Every tunable of numconv in one place: tile sizes, buffer budgets, tolerances.

Kernels read these values through their launchers; no kernel holds a magic number of its own.
Tiles and partitions depend only on array shapes and these constants, never on the thread count,
so for a given configuration results are bit-identical however many threads run. Changing a tile
or segment size changes speed and may change the order of summation, hence the last bits.
"""

# CPU convolution: columns (output pixels, batch-major) are processed in tiles of this many columns,
# each tile's im2col block living in a thread-local buffer of about TILE_BYTES. 1 MB against 256 KB
# (2 cores, three alternating rounds): ResNet's 3x3 layer at 56x56 1.1x faster, VGG's at 28x28
# 1.12x, a stride-2 3x3 1.05x, a 1x1 the same, AlexNet's conv2 (2,400 rows) 0.95x.
CPU_TILE_BYTES = 1024 * 1024
CPU_TILE_MIN_COLS = 64
CPU_TILE_MAX_COLS = 4096

# Convolution kernels (forward, input and weight gradients): "auto" runs the direct kernels of
# numconv.kernels.cpu.conv (no im2col) for stride 1 with at most DIRECT_MAX_CHANNELS output
# channels per group, or twice as many where each output has at most DIRECT_FEW_TAPS taps
# (Cg*KH*KW): there im2col's matrix product has too few rows to run near the BLAS peak, and the
# direct kernels ran 1.3-2.5x faster (2 cores, 28x28 images; LeNet-5's layers 2.5-4x); im2col +
# the taps kernels or im2col + BLAS otherwise. "direct", "taps" and "im2col" force one (direct and
# taps still need stride 1). Each direct
# task's accumulators take at most DIRECT_ACC_BYTES.
CPU_CONV_KERNEL = "auto"
# The register-blocked forward pass (numconv.kernels.cpu.blocked: output channels in the vector
# lanes, the sums of a block of 10 consecutive pixels in registers). "auto" runs it in float32 (float64 ran
# at 0.6x the direct kernel's speed) where it measured faster, A/B in one process on 2 cores:
# - stride-1 layers that would run the direct kernel, with a multiple of 16 output channels a
#   group and at least BLOCKED_MIN_TAPS taps (Cg*KH*KW) an output: LeNet-5's C3 (150 taps)
#   1.4-1.5x, 6 -> 32 and 6 -> 48 maps 1.6x and 2.6x, CIFAR ResNet's 32 -> 32 1.6x (but its
#   16 -> 16, 144 taps, 1.0x, and 3 -> 16, 27 taps, 0.6x);
# - other stride-1 layers larger than 1x1 (the taps kernels' territory) with a multiple of 16
#   output channels a group and blocks of pixels at least BLOCKED_MIN_COVER output (see
#   conv.blocked_cover: only outputs of a few pixels fall below), forward and input gradient,
#   best of 5 alternating rounds (bench_conv_kernels.py --kernels taps,blocked), since blocks
#   run along the rows: AlexNet's conv2 1.42x and 1.44x, conv3 (13x13) 1.24x and 1.19x, 3x3
#   256 -> 256 at 28x28 1.29x and 1.32x, at 14x14 1.22x and 1.23x, 512 maps at 7x7 1.25x and
#   1.16x, ResNet's 64 -> 64 at 56x56 1.09x and 1.22x, 64 maps at 8x8 1.10x and 1.16x, 48 maps at
#   28x28 1.19x and 1.20x, GoogLeNet's 5x5 32 -> 96 at 28x28 1.16x and 1.10x. (Blocks of 5x2
#   pixels before lost to taps where they covered the output badly: 13x13, 7x7.)
# - strided layers larger than 1x1 whose lanes are at least three-quarters used, instead of
#   im2col: AlexNet's conv1 1.35x, ResNet's stem 1.65x, 3x3 stride-2 layers 1.1-2.3x (a 1x1
#   stride-2 256 -> 512 ran 0.86x and stays im2col).
# Its weight gradient (a block of 5 x 2 taps of one input channel, or 5 taps of two channels,
# LANES output channels wide) runs, under "auto", in float32 for one group, kernels at least 5
# wide and 2 tall or of 2+ input channels, and lanes at least three-quarters used: LeNet-5's C3
# 1.5x, AlexNet's conv1 1.2-1.3x and conv2 1.06-1.1x (1.4x with the flat tap offsets and channel
# pairs), ResNet's stem 1.1x, GoogLeNet's 5x5 layers 1.15-1.26x, the Kim CNN's width-5 conv1d
# 1.6x (LeNet-5's C1, 6 maps, 0.37x: excluded).
# "blocked" forces it for every forward pass whose output has at least 10 pixels (one block),
# every weight gradient of a kernel of at least 5x2 taps and the stride-1 input gradients.
CPU_BLOCKED_MIN_TAPS = 128
CPU_BLOCKED_MIN_COVER = 0.85
# Each blocked task copies the padded input rows it reads, at most about this many bytes (more
# row blocks where an image's would not fit: VGG's 64 maps of 224x224).
CPU_BLOCKED_INPUT_BYTES = 256 * 1024
CPU_DIRECT_MAX_CHANNELS = 32
CPU_DIRECT_FEW_TAPS = 64
CPU_DIRECT_ACC_BYTES = 128 * 1024
# Small images are laid side by side in a direct task until its run of positions reaches about
# this many (LeNet-5's C3, 10 rows at pitch 14, alone runs 136).
CPU_DIRECT_RUN = 1024
# The direct input gradient is a full correlation over dy padded by the kernel's extent: "auto"
# uses it only where that visits at most this many times the positions im2col does (LeNet-5's C3,
# 10x10 outputs of a 5x5 kernel: 2.5 times, and still 1.4x faster than im2col).
CPU_DIRECT_MAX_WASTE = 3.0
# Stride-1 layers that "auto" does not give the direct kernels run one BLAS product per tap on
# shifted windows of the padded input (the "taps" kernels: no im2col copy) where a group has at
# least TAPS_MIN_CHANNELS input channels (each product's inner dimension; fewer, and im2col's
# Cg*KH*KW rows run BLAS better). Forward blocks hold about TAPS_COLS output positions, weight-
# gradient blocks about TAPS_WGRAD_COLS (their products' inner dimension).
CPU_TAPS_MIN_CHANNELS = 16
CPU_TAPS_COLS = 256
CPU_TAPS_WGRAD_COLS = 1024
# The weight gradient of a layer the direct kernels take (few output maps) runs the taps kernel
# instead where a group has at least TAPS_WGRAD_MIN_CHANNELS input channels and
# TAPS_WGRAD_MIN_MAPS output channels: its products, Og x Cg a tap over 1024 positions, beat
# the direct kernel's sums (bench_conv_kernels.py --kernels taps,direct, 3x3, batch 128, best of
# 5): CIFAR ResNet's 16 -> 16 at 32x32 1.53x, 32 -> 32 at 16x16 2.05x, 16 -> 32 at 16x16 1.77x,
# 8 -> 16 at 32x32 1.42x; with 3 input channels (3 -> 16) 0.92x, so direct stays there.
CPU_TAPS_WGRAD_MIN_CHANNELS = 8
CPU_TAPS_WGRAD_MIN_MAPS = 16
# ...but the input gradient of a layer with at least IM2COL_DX_MIN_MAPS output channels and fewer
# than IM2COL_DX_MAX_CHANNELS input channels per group runs im2col: its product W^T @ dY then has
# a long inner dimension (Og) and many rows (Cg*KH*KW), while each tap's product would make only
# Cg outputs. AlexNet's conv2 (96 -> 256, 5x5): im2col 1.15x faster; a VGG layer (256 -> 256) and a
# 1x1 (1024 -> 256) ran 1.04x and 1.14x faster by the taps, ResNet's (64 -> 64) 1.6x
# (benchmarks/bench_conv_kernels.py).
CPU_IM2COL_DX_MIN_MAPS = 256
CPU_IM2COL_DX_MAX_CHANNELS = 128

# Weight gradients: the columns are cut into chunks of about this many bytes of im2col, each one
# matrix product with a long reduction (short products and a fresh (O, R) result per product made
# the weight gradient twice as slow as the forward pass); consecutive chunks are grouped into at
# most MAX_SEGMENTS segments, whose partial sums are reduced in a fixed order.
CPU_WGRAD_CHUNK_BYTES = 2 * 1024 * 1024
CPU_WGRAD_MAX_SEGMENTS = 32

# The window tagger's layers on the CPU (numconv.kernels.cpu.windows): products over the real
# tokens' windows are cut into row blocks of at least this many rows (at most CPU_MIN_TASKS).
CPU_WINDOW_MIN_ROWS = 64
# Their weight gradients (a reduction over the rows) run one product per segment of at least this
# many rows: at 300 hidden units, 2-4 segments of a 6,400-row batch ran 15 % faster than 8.
CPU_WINDOW_SEGMENT_ROWS = 1536
# The tagger's first layer multiplies either each real token's window (K*C inputs a token) or,
# where its inputs are looked up in tables, each distinct id of each table once (the products by
# id of numconv.kernels.cpu.windows). "auto" goes by id where the sum over tables of (distinct ids
# x dimension + real tokens x ID_OVERHEAD) is below real tokens x C: the gathers around the
# products by id cost about as much per table as ID_OVERHEAD more dimensions would (2 cores, 300
# hidden units: random ids at batch 256, 85 % of them distinct, ran 1.12x faster by id at 300-d
# and 0.86x at 50-d). "windows" and "distinct" force one.
CPU_WINDOW_PRODUCTS = "auto"
CPU_WINDOW_ID_OVERHEAD = 10

# The ops' large host outputs (layer outputs, input gradients; numconv.ops._buffers) come from a
# pool of recycled buffers: a buffer nothing refers to any more is handed out again instead of
# fresh memory, whose first write page-faults (a third of LeNet-5's step at batch 256). Arrays
# under MIN_BYTES are left to the allocator; the pool holds at most POOL_BYTES (0: no pool).
CPU_BUFFER_MIN_BYTES = 256 * 1024
CPU_BUFFER_POOL_BYTES = 512 * 1024 * 1024

# Host arrays of at least this many elements are zeroed by Numba's threads (zero_grad).
CPU_PARALLEL_ZERO_MIN = 1 << 16

# CUDA launch configuration (numconv.kernels.cuda). Threads per block of the one-thread-per-element
# kernels and of the one-block-per-output reductions (bias gradients, batch statistics, the loss;
# any positive count; a multiple of 32 fills warps).
CUDA_THREADS_PER_BLOCK = 128
# Tiled convolution forward and the Linear layers' matrix multiply: blocks of CUDA_TILE x CUDA_TILE
# threads, each block computing CUDA_TILE output channels (rows) by CUDA_TILE output pixels
# (columns) from tiles staged in shared memory (at most 32: a block holds at most 1024 threads).
CUDA_TILE = 16
# "tiled" (shared-memory implicit GEMM) or "direct" (one thread per output element).
CUDA_CONV_FORWARD = "tiled"
# Weight gradients: each thread sums one dw element over a segment of this many output positions;
# segments are then added in order (as the CPU weight-gradient segments are).
CUDA_WGRAD_SEGMENT = 2048

# Tolerances, defined once.
RTOL = {"float32": 1e-4, "float64": 1e-10}
ATOL = {"float32": 1e-5, "float64": 1e-12}
GRADCHECK_EPS = 1e-6
GRADCHECK_ATOL = 1e-6
GRADCHECK_RTOL = 1e-5

# Split work into at least this many parallel tasks where the batch alone gives fewer (a batch of
# one still uses every core). A shape-only rule, so results do not depend on the thread count.
CPU_MIN_TASKS = 8

# CPU Linear layers: a product is cut into blocks of about this many flops (a smaller layer is one
# block, with no thread hand-off at all), at most MAX_BLOCKS of them, none narrower than MIN_SIDE
# rows or columns where the product is wide enough.
CPU_LINEAR_BLOCK_FLOPS = 4 * 1024 * 1024
CPU_LINEAR_MAX_BLOCKS = 16
CPU_LINEAR_MIN_SIDE = 64
