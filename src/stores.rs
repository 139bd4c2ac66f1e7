//! The config's stores (`output.s3`, `output.gcs`, `output.azure`, `output.backup`) as upload
//! targets for the uploader, and their pre-flight before anything starts.

use pagecast_actors::store::azure::AzureCredentials;
use pagecast_actors::store::gcs::GcsCredentials;
use pagecast_actors::store::{AzureTarget, GcsTarget, S3Target, Store, Target};
use pagecast_actors::uploader::{BackupSpec, UploadSpec};

use crate::config::{AzureAuth, AzureOutput, Backup, GcsAuth, GcsOutput, Output, S3Output};

/// The primary store's upload (without the file), and the backup's, if the config has them.
pub fn upload_spec(output: &Output) -> Option<UploadSpec> {
    let (target, part_size, give_up_after) = if let Some(s3) = &output.s3 {
        (s3_target(s3, "output.s3"), s3.part_size, s3.give_up_after)
    } else if let Some(gcs) = &output.gcs {
        (
            gcs_target(gcs, "output.gcs"),
            gcs.part_size,
            gcs.give_up_after,
        )
    } else if let Some(azure) = &output.azure {
        (
            azure_target(azure, "output.azure"),
            azure.part_size,
            azure.give_up_after,
        )
    } else {
        return None;
    };
    Some(UploadSpec {
        target,
        file: Default::default(),
        part_size,
        give_up_after,
        backup: output.backup.as_ref().map(backup_spec),
    })
}

fn backup_spec(backup: &Backup) -> BackupSpec {
    let field = backup.field();
    let (target, part_size, give_up_after) = match backup {
        Backup::S3(s3) => (s3_target(s3, field), s3.part_size, s3.give_up_after),
        Backup::Gcs(gcs) => (gcs_target(gcs, field), gcs.part_size, gcs.give_up_after),
        Backup::Azure(a) => (azure_target(a, field), a.part_size, a.give_up_after),
    };
    BackupSpec {
        target,
        part_size,
        give_up_after,
    }
}

/// The stores checked (see [`pagecast_actors::store::preflight`]): the primary's, then the
/// backup's, so that a wrong backup is said before the recording instead of when it is needed.
pub async fn preflight(
    spec: &UploadSpec,
    overwrite: bool,
) -> Result<(Box<dyn Store>, Option<Box<dyn Store>>), String> {
    let primary = pagecast_actors::store::preflight(&spec.target, overwrite)
        .await
        .map_err(|f| f.message)?;
    let backup = match &spec.backup {
        Some(b) => Some(
            pagecast_actors::store::preflight(&b.target, overwrite)
                .await
                .map_err(|f| f.message)?,
        ),
        None => None,
    };
    Ok((primary, backup))
}

fn endpoint(url: &Option<url::Url>) -> Option<String> {
    url.as_ref()
        .map(|e| e.as_str().trim_end_matches('/').to_owned())
}

fn s3_target(s3: &S3Output, field: &str) -> Target {
    Target::S3(s3_of(s3, field))
}

fn s3_of(s3: &S3Output, field: &str) -> S3Target {
    S3Target {
        field: field.to_owned(),
        bucket: s3.bucket.clone(),
        key: s3.key.clone(),
        region: s3.region.clone(),
        endpoint: endpoint(&s3.endpoint),
        force_path_style: s3.force_path_style,
        access_key: s3.access_key.clone(),
        secret: s3.secret.clone(),
        session_token: s3.session_token.clone(),
    }
}

fn gcs_target(gcs: &GcsOutput, field: &str) -> Target {
    Target::Gcs(GcsTarget {
        field: field.to_owned(),
        bucket: gcs.bucket.clone(),
        key: gcs.key.clone(),
        endpoint: endpoint(&gcs.endpoint),
        credentials: match &gcs.auth {
            GcsAuth::Key(key) => GcsCredentials::Key(key.clone()),
            GcsAuth::File(path) => GcsCredentials::File(path.clone()),
            // An emulator without credentials takes requests without a token.
            GcsAuth::Default if gcs.endpoint.is_some() => GcsCredentials::Anonymous,
            GcsAuth::Default => GcsCredentials::Chain,
        },
    })
}

fn azure_target(azure: &AzureOutput, field: &str) -> Target {
    Target::Azure(AzureTarget {
        field: field.to_owned(),
        account: azure.account.clone(),
        container: azure.container.clone(),
        blob: azure.blob.clone(),
        endpoint: endpoint(&azure.endpoint),
        credentials: match &azure.auth {
            AzureAuth::Key(key) => AzureCredentials::Key(key.clone()),
            AzureAuth::Sas(sas) => AzureCredentials::Sas(sas.clone()),
            AzureAuth::Default => AzureCredentials::Chain,
        },
    })
}
