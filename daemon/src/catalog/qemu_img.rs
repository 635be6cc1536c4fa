//! `qemu-img`: what a disk image file is (`info --output=json`) and conversions between formats,
//! always with explicit `-f` and `-O` so no file is ever taken for another format.

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

use super::{tool, CatalogError};

/// What `qemu-img info` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub format: String,
    pub virtual_size: u64,
    /// The backing file a qcow2 overlay reads through, if any.
    pub backing_file: Option<String>,
    /// The external data file a qcow2 keeps its clusters in, if any.
    pub data_file: Option<String>,
}

/// Parses `qemu-img info --output=json`.
pub fn parse_info(json: &[u8]) -> Result<FileInfo, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let format = v["format"]
        .as_str()
        .ok_or("no \"format\" field")?
        .to_string();
    let virtual_size = v["virtual-size"]
        .as_u64()
        .ok_or("no \"virtual-size\" field")?;
    let text = |v: &Value| v.as_str().map(str::to_string);
    Ok(FileInfo {
        format,
        virtual_size,
        backing_file: text(&v["backing-filename"]).or_else(|| text(&v["full-backing-filename"])),
        data_file: text(&v["format-specific"]["data"]["data-file"]),
    })
}

/// Probes `path`'s format and reads its header. With `format`, opens it only as that format.
pub async fn info(path: &Path, format: Option<&str>) -> Result<FileInfo, CatalogError> {
    let mut args: Vec<&OsStr> = vec!["info".as_ref(), "--output=json".as_ref()];
    if let Some(f) = format {
        args.extend([OsStr::new("-f"), OsStr::new(f)]);
    }
    args.push(path.as_os_str());
    let out = tool::output("qemu-img", &args).await?;
    parse_info(&out).map_err(|e| {
        CatalogError::Tool(format!(
            "cannot read `qemu-img info` of {}: {e}",
            path.display()
        ))
    })
}

/// Output formats `convert` can write, named as in templates (`vhd` is qemu's `vpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// zstd-compressed qcow2: the catalog's own format.
    Qcow2Zstd,
    /// Plain qcow2 for export (readable by any QEMU, and by tools without zstd support).
    Qcow2,
    Raw,
    /// A fixed-size VHD with its size kept exact, as Azure and Hyper-V take it.
    Vhd,
    Vmdk,
}

impl Format {
    /// The export format a template's `distribute[].format` names.
    pub fn for_export(name: &str) -> Option<Format> {
        match name {
            "qcow2" => Some(Format::Qcow2),
            "raw" => Some(Format::Raw),
            "vhd" => Some(Format::Vhd),
            "vmdk" => Some(Format::Vmdk),
            _ => None,
        }
    }

    /// `-O` and `-o`/`-c` arguments for `qemu-img convert`.
    fn args(self) -> &'static [&'static str] {
        match self {
            Format::Qcow2Zstd => &["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
            Format::Qcow2 => &["-O", "qcow2"],
            Format::Raw => &["-O", "raw"],
            Format::Vhd => &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
            Format::Vmdk => &["-O", "vmdk"],
        }
    }
}

/// `qemu-img convert -f FROM <format args> SRC DEST`. `DEST` is overwritten.
pub async fn convert(src: &Path, from: &str, to: Format, dest: &Path) -> Result<(), CatalogError> {
    let mut args: Vec<&OsStr> = vec!["convert".as_ref(), "-f".as_ref(), from.as_ref()];
    args.extend(to.args().iter().map(OsStr::new));
    args.extend([src.as_os_str(), dest.as_os_str()]);
    tool::output("qemu-img", &args).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_backing_and_data_files() {
        let overlay = br#"{"format":"qcow2","virtual-size":67108864,
            "backing-filename":"base.qcow2","full-backing-filename":"/x/base.qcow2",
            "format-specific":{"type":"qcow2","data":{"compat":"1.1"}}}"#;
        let info = parse_info(overlay).expect("parses");
        assert_eq!(info.backing_file.as_deref(), Some("base.qcow2"));
        assert_eq!(info.data_file, None);
        assert_eq!(info.virtual_size, 64 << 20);

        let external = br#"{"format":"qcow2","virtual-size":1,
            "format-specific":{"type":"qcow2","data":{"data-file":"data.raw"}}}"#;
        let info = parse_info(external).expect("parses");
        assert_eq!(info.data_file.as_deref(), Some("data.raw"));

        let raw = br#"{"format":"raw","virtual-size":10485760}"#;
        let info = parse_info(raw).expect("parses");
        assert_eq!((info.format.as_str(), info.backing_file), ("raw", None));

        assert!(parse_info(b"{}").is_err());
        assert!(parse_info(b"qemu-img: error").is_err());
    }

    #[test]
    fn export_formats() {
        assert_eq!(Format::for_export("vhd"), Some(Format::Vhd));
        assert_eq!(Format::Vhd.args()[1], "vpc");
        assert_eq!(Format::for_export("vdi"), None);
    }
}
