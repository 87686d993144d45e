"""The gRPC face of the service (Serve's gRPC proxy): the RewardModel calls of the RL path.

The protobuf messages are declared here in Python (no generated code to keep in step); as a .proto file:

    package vlreward.v1;
    service RewardService {
      rpc Score(ScoreRequest) returns (ScoreReply);
      rpc ScoreBatch(BatchScoreRequest) returns (BatchScoreReply);
      rpc Models(ModelsRequest) returns (ModelsReply);
      rpc Embed(EmbedRequest) returns (EmbedReply);
    }
    message ScoreRequest { string model = 1; string task = 2; bytes media = 3; uint32 max_frames = 4;
                           uint32 stride = 5; }          // media: a .npy uint8 [T,H,W,3] or a video file
    message ScoreReply { string model = 1; string version = 2; uint32 num_frames = 3; repeated float values = 4;
                         repeated float rewards = 5; double episode_return = 6; }
    message BatchScoreRequest { string model = 1; repeated bytes trajectories = 2;  // one .npy each
                                repeated string tasks = 3;   // one per trajectory, or one shared
                                repeated bool successes = 4; }  // optional: the live reward audit
    message BatchScoreReply { string model = 1; repeated ScoreReply results = 2; }
    message ModelsRequest {}
    message ModelInfo { string name = 1; string kind = 2; repeated string goal_kinds = 3; string version = 4;
                        bool streams = 5; bool segments = 6; }      // as in GET /v1/models
    message ModelsReply { repeated ModelInfo models = 1; }
    message EmbedRequest { string model = 1; string task = 2; }
    message EmbedReply { string model = 1; string kind = 2; string digest = 3; repeated float vector = 4; }

An error ends the call with the gRPC status of its HTTP status (`GRPC_CODES`) and, as details, the JSON body the
HTTP API answers (`{"error": {"code", "message"}}`). The API token goes in the `authorization` metadata
(`Bearer <token>`); with several Serve applications, the `application` metadata names this one (`vlreward`).
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import builder

SERVICE = "vlreward.v1.RewardService"
_FIELDS = descriptor_pb2.FieldDescriptorProto
_TYPES = {"string": _FIELDS.TYPE_STRING, "bytes": _FIELDS.TYPE_BYTES, "uint32": _FIELDS.TYPE_UINT32,
          "float": _FIELDS.TYPE_FLOAT, "double": _FIELDS.TYPE_DOUBLE, "bool": _FIELDS.TYPE_BOOL}
_MESSAGES = {  # name -> its fields in number order: (name, type), "repeated T" for lists, a message name for one
    "ScoreRequest": [("model", "string"), ("task", "string"), ("media", "bytes"), ("max_frames", "uint32"),
                     ("stride", "uint32")],
    "ScoreReply": [("model", "string"), ("version", "string"), ("num_frames", "uint32"), ("values", "repeated float"),
                   ("rewards", "repeated float"), ("episode_return", "double")],
    "BatchScoreRequest": [("model", "string"), ("trajectories", "repeated bytes"), ("tasks", "repeated string"),
                          ("successes", "repeated bool")],
    "BatchScoreReply": [("model", "string"), ("results", "repeated ScoreReply")],
    "ModelsRequest": [],
    "ModelInfo": [("name", "string"), ("kind", "string"), ("goal_kinds", "repeated string"), ("version", "string"),
                  ("streams", "bool"), ("segments", "bool")],
    "ModelsReply": [("models", "repeated ModelInfo")],
    "EmbedRequest": [("model", "string"), ("task", "string")],
    "EmbedReply": [("model", "string"), ("kind", "string"), ("digest", "string"), ("vector", "repeated float")],
}
METHODS = {"Score": ("ScoreRequest", "ScoreReply"), "ScoreBatch": ("BatchScoreRequest", "BatchScoreReply"),
           "Models": ("ModelsRequest", "ModelsReply"), "Embed": ("EmbedRequest", "EmbedReply")}
#: an error's HTTP status (serve/status.py) -> the gRPC status the call ends with
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              404: grpc.StatusCode.NOT_FOUND, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
              500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="vlreward/v1/reward.proto", package="vlreward.v1", syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for number, (field, kind) in enumerate(fields, start=1):
            repeated, _, kind = kind.rpartition(" ")
            typed = {"type": _TYPES[kind]} if kind in _TYPES else {"type": _FIELDS.TYPE_MESSAGE,
                                                                   "type_name": f".vlreward.v1.{kind}"}
            message.field.add(name=field, number=number, json_name=field, **typed,
                              label=_FIELDS.LABEL_REPEATED if repeated else _FIELDS.LABEL_OPTIONAL)
    service = file.service.add(name=SERVICE.rpartition(".")[2])
    for method, (request, reply) in METHODS.items():
        service.method.add(name=method, input_type=f".vlreward.v1.{request}", output_type=f".vlreward.v1.{reply}")
    return file


_built: dict = {}
builder.BuildTopDescriptorsAndMessages(
    descriptor_pool.Default().AddSerializedFile(_file_descriptor().SerializeToString()), __name__, _built)
ScoreRequest, ScoreReply = _built["ScoreRequest"], _built["ScoreReply"]
BatchScoreRequest, BatchScoreReply = _built["BatchScoreRequest"], _built["BatchScoreReply"]
ModelsRequest, ModelInfo, ModelsReply = _built["ModelsRequest"], _built["ModelInfo"], _built["ModelsReply"]
EmbedRequest, EmbedReply = _built["EmbedRequest"], _built["EmbedReply"]
REPLIES = {method: _built[reply] for method, (_, reply) in METHODS.items()}  # what each method answers


def add_servicer(servicer, server) -> None:
    """Register RewardService's methods on `server` (Serve's `grpc_servicer_functions` calls this): the proxy routes
    each call to the ingress replica's method of the same name."""
    handlers = {method: grpc.unary_unary_rpc_method_handler(getattr(servicer, method),
                                                            request_deserializer=_built[request].FromString,
                                                            response_serializer=_built[reply].SerializeToString)
                for method, (request, reply) in METHODS.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


#: the import path Serve's gRPC proxy loads (ServeArgs' grpc_port starts the proxy with it)
SERVICER_FUNCTION = f"{__name__}.add_servicer"
