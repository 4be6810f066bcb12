/// SwiftAI's release, written into export bundles and ONNX files, and compared between the ranks of a distributed job.
public enum SwiftAIVersion {
    public static let string = "0.11.0"
}
