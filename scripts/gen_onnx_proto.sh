#!/usr/bin/env bash
# Regenerates Sources/SwiftAIDeploy/ONNX/onnx.pb.swift from onnx.proto (copied from the `onnx` Python package,
# 1.23.2). Run once by hand when onnx.proto changes; the generated file is committed, so builds need neither
# protoc nor the plugin.
#
# Needs: protoc (Debian: apt-get install -y protobuf-compiler) and swift-protobuf 1.39.0's protoc-gen-swift:
#   git clone https://github.com/apple/swift-protobuf /tmp/swift-protobuf
#   (cd /tmp/swift-protobuf && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift)
# PROTOC_GEN_SWIFT overrides the plugin's path.
set -euo pipefail
cd "$(dirname "$0")/.."
plugin="${PROTOC_GEN_SWIFT:-/tmp/swift-protobuf/.build/release/protoc-gen-swift}"
dir=Sources/SwiftAIDeploy/ONNX
protoc --plugin=protoc-gen-swift="$plugin" --proto_path="$dir" \
  --swift_opt=Visibility=Internal --swift_out="$dir" "$dir/onnx.proto"
echo "wrote $dir/onnx.pb.swift ($("$plugin" --version))"
