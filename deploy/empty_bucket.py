"""Empty a versioned S3 bucket (every object version and delete marker), then optionally delete it.

Used by deploy/teardown.sh: ``python3 deploy/empty_bucket.py BUCKET --region R [--delete]``.
A bucket that does not exist is not an error (teardown can be run again). Needs boto3
(``pip install 'lambdanet[aws]'``; Lithops brings it too).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bucket")
    parser.add_argument("--region", required=True)
    parser.add_argument("--delete", action="store_true", help="delete the bucket once it is empty")
    args = parser.parse_args(argv)

    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", region_name=args.region)
    try:
        s3.head_bucket(Bucket=args.bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            print(f"s3://{args.bucket}: no such bucket (nothing to empty)")
            return 0
        raise
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=args.bucket):
        keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(keys), 1000):
            out = s3.delete_objects(Bucket=args.bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
            if out.get("Errors"):
                first = out["Errors"][0]
                print(f"s3://{args.bucket}: cannot delete {first.get('Key')} ({first.get('Code')})", file=sys.stderr)
                return 1
            removed += len(keys[i:i + 1000])
    print(f"s3://{args.bucket}: removed {removed} object versions and delete markers")
    if args.delete:
        s3.delete_bucket(Bucket=args.bucket)
        print(f"s3://{args.bucket}: deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
