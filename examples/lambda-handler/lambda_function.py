"""An AWS Lambda handler for an API Gateway HTTP API (payload format 2.0)."""

import base64
import json


def lambda_handler(event, context):
    params = event.get("queryStringParameters") or {}
    if "size" in params:  # binary answers go base64, as on AWS
        data = bytes(range(256)) * int(params["size"])
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(data).decode(),
            "isBase64Encoded": True,
        }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "hello": params.get("name", "world"),
                "path": event["rawPath"],
                "request_id": context.aws_request_id,
                "ms_left": context.get_remaining_time_in_millis(),
            }
        ),
    }
