"""Test-side S3 operations against the moto server, with boto3 from the project's venv.

usage: s3.py ENDPOINT mkbucket BUCKET
       s3.py ENDPOINT get BUCKET KEY OUT_FILE
       s3.py ENDPOINT put BUCKET KEY IN_FILE
       s3.py ENDPOINT uploads BUCKET        (prints how many multipart uploads are open)
       s3.py ENDPOINT objects BUCKET        (prints how many objects it holds)
       s3.py ENDPOINT fetch BUCKET PREFIX DIR (downloads every object under PREFIX into DIR,
                                             by the rest of its key; prints the keys)
       s3.py ENDPOINT iam-user BUCKET       (4 requests: user, policy, key, bucket; prints
                                             "ACCESS_KEY SECRET" of a user allowed everything)
"""
import json
import sys

import boto3


def main():
    endpoint, command, *args = sys.argv[1:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if command == "mkbucket":
        s3.create_bucket(Bucket=args[0])
    elif command == "get":
        bucket, key, out = args
        s3.download_file(bucket, key, out)
    elif command == "put":
        bucket, key, source = args
        s3.upload_file(source, bucket, key)
    elif command == "iam-user":
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        iam.create_user(UserName="pagecast")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pagecast", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="pagecast")["AccessKey"]
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        s3.create_bucket(Bucket=args[0])
        print(key["AccessKeyId"], key["SecretAccessKey"])
    elif command == "fetch":
        bucket, prefix, out = args
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        for obj in listed:
            key = obj["Key"]
            s3.download_file(bucket, key, f"{out}/{key[len(prefix):]}")
            print(key)
    elif command == "keys":
        bucket, prefix = args
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            print(obj["Key"])
    elif command == "objects":
        print(s3.list_objects_v2(Bucket=args[0]).get("KeyCount", 0))
    elif command == "uploads":
        print(len(s3.list_multipart_uploads(Bucket=args[0]).get("Uploads", [])))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
