/// SwiftAI's release, written into export bundles and ONNX files.
public enum SwiftAIVersion {
    public static let string = "0.11.0"
}
