// kindconsts reads string constants out of kind's node-image builder source (the default CNI
// and storage manifests and the images they name), which kind keeps unexported. Standard library
// only. Run by scripts/tools/kind.sh.
module journey/tools/kindconsts

go 1.26.0
