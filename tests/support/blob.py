"""Test-side Azure Blob operations against Azurite, with Azure's SDK from the project's venv
(named blob.py: a script named azure.py would hide the azure package from itself).

usage: blob.py ENDPOINT mkcontainer CONTAINER
       blob.py ENDPOINT get CONTAINER BLOB OUT_FILE
       blob.py ENDPOINT put CONTAINER BLOB IN_FILE
       blob.py ENDPOINT blobs CONTAINER       (prints the blob names, one a line)
ENDPOINT is the account's blob endpoint (http://127.0.0.1:PORT/devstoreaccount1); the account is
Azurite's well-known development account.
"""
import sys

from azure.storage.blob import BlobServiceClient

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main():
    endpoint, command, *args = sys.argv[1:]
    service = BlobServiceClient(
        account_url=endpoint, credential={"account_name": ACCOUNT, "account_key": KEY}
    )
    if command == "mkcontainer":
        service.create_container(args[0])
    elif command == "get":
        container, blob, out = args
        with open(out, "wb") as f:
            f.write(service.get_blob_client(container, blob).download_blob().readall())
    elif command == "put":
        container, blob, path = args
        with open(path, "rb") as f:
            service.get_blob_client(container, blob).upload_blob(f, overwrite=True)
    elif command == "blobs":
        for blob in service.get_container_client(args[0]).list_blobs():
            print(blob.name)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
