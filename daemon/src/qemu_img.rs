//! `qemu-img`, kilnd's one reader of what a disk image file is (`info --output=json`, for the
//! catalog and the driver) and its conversions between formats, always with explicit `-f` and
//! `-O` so no file is ever taken for another format; and sniffing a caller's file by its header.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::tool::{self, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum QemuImgError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// `qemu-img info` said something that is not what it says.
    #[error("cannot read `qemu-img info` of {}: {reason}", .path.display())]
    Info { path: PathBuf, reason: String },
    #[error("{} is not a UTF-8 path", .path.display())]
    NotUtf8 { path: PathBuf },
}

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
pub async fn info(path: &Path, format: Option<&str>) -> Result<FileInfo, QemuImgError> {
    read_info(path, format, &[]).await
}

/// `info` of a file other processes may hold open (a base image under running VMs): read
/// without taking qemu's image lock (`--force-share`).
pub async fn info_shared(path: &Path) -> Result<FileInfo, QemuImgError> {
    read_info(path, None, &["--force-share"]).await
}

async fn read_info(
    path: &Path,
    format: Option<&str>,
    flags: &[&str],
) -> Result<FileInfo, QemuImgError> {
    let mut args: Vec<&OsStr> = vec!["info".as_ref()];
    args.extend(flags.iter().map(OsStr::new));
    args.push("--output=json".as_ref());
    if let Some(f) = format {
        args.extend([OsStr::new("-f"), OsStr::new(f)]);
    }
    args.push(path.as_os_str());
    let out = tool::output("qemu-img", &args).await?;
    parse_info(&out).map_err(|reason| QemuImgError::Info {
        path: path.to_path_buf(),
        reason,
    })
}

/// Creates `overlay`, a qcow2 whose backing file is the qcow2 `backing`, of `size` bytes (the
/// backing's size when `None`).
pub async fn create_overlay(
    backing: &Path,
    overlay: &Path,
    size: Option<u64>,
) -> Result<(), ToolError> {
    let size = size.map(|s| s.to_string());
    let mut args: Vec<&OsStr> = vec![
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-F".as_ref(),
        "qcow2".as_ref(),
        "-b".as_ref(),
        backing.as_os_str(),
        overlay.as_os_str(),
    ];
    if let Some(size) = &size {
        args.push(size.as_ref());
    }
    tool::output("qemu-img", &args).await.map(drop)
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
pub async fn convert(src: &Path, from: &str, to: Format, dest: &Path) -> Result<(), QemuImgError> {
    let mut args: Vec<&OsStr> = vec!["convert".as_ref(), "-f".as_ref(), from.as_ref()];
    args.extend(to.args().iter().map(OsStr::new));
    args.extend([src.as_os_str(), dest.as_os_str()]);
    tool::output("qemu-img", &args).await?;
    Ok(())
}

/// What a file's first bytes say it is, read by kilnd itself so that qemu-img never probes a
/// caller's file, nor opens what its header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// No header of a format qemu knows: raw bytes.
    Raw,
    /// A qcow2 header, and whether it names a backing file or an external data file.
    Qcow2 { backing: bool, data_file: bool },
    /// Another image format (qemu's name for it), e.g. a VMDK whose extents are other files.
    Other(&'static str),
}

/// Reads a disk image's format from its first bytes (at least 512 of them, when it has them).
pub fn sniff(header: &[u8]) -> Sniffed {
    let at = |offset: usize, magic: &[u8]| header.get(offset..offset + magic.len()) == Some(magic);
    let be = |offset: usize, n: usize| {
        header.get(offset..offset + n).map_or(0, |b| {
            b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
        })
    };
    if at(0, b"QFI\xfb") {
        let version = be(4, 4);
        if version < 2 {
            return Sniffed::Other("qcow");
        }
        // Version 3 keeps incompatible features at 72; bit 2 is "external data file". A
        // header too short for them is not an image qemu would open either way.
        let data_file = version >= 3 && be(72, 8) & 0b100 != 0;
        return Sniffed::Qcow2 {
            backing: be(8, 8) != 0,
            data_file,
        };
    }
    const OTHERS: &[(usize, &[u8], &str)] = &[
        (0, b"KDMV", "vmdk"),
        (0, b"COWD", "vmdk"),
        (0, b"# Disk DescriptorFile", "vmdk"),
        (0, b"conectix", "vpc"),
        (0, b"vhdxfile", "vhdx"),
        (0, b"QED\0", "qed"),
        (0, b"LUKS\xba\xbe", "luks"),
        (0x40, b"\x7f\x10\xda\xbe", "vdi"),
        (0, b"WithoutFreeSpace", "parallels"),
        (0, b"WithouFreSpacExt", "parallels"),
        (0, b"Bochs Virtual HD Image", "bochs"),
        (0, b"#!/bin/sh\n#V2.0 Format", "cloop"),
    ];
    OTHERS
        .iter()
        .find(|(offset, magic, _)| at(*offset, magic))
        .map_or(Sniffed::Raw, |(_, _, format)| Sniffed::Other(format))
}

/// `convert` of a file that must stand alone: opened as `from` (`qcow2` or `raw`) through a
/// `json:` description kilnd writes itself, naming the format, the plain file and no backing
/// file, so nothing but `src`'s own bytes is read whatever its header says.
pub async fn convert_alone(
    src: &Path,
    from: &str,
    to: Format,
    dest: &Path,
) -> Result<(), QemuImgError> {
    let file = src.to_str().ok_or_else(|| QemuImgError::NotUtf8 {
        path: src.to_path_buf(),
    })?;
    let mut spec = serde_json::json!({
        "driver": from,
        "file": {"driver": "file", "filename": file},
    });
    if from == "qcow2" {
        spec["backing"] = Value::Null;
    }
    let spec = format!("json:{spec}");
    let mut args: Vec<&OsStr> = vec!["convert".as_ref()];
    args.extend(to.args().iter().map(OsStr::new));
    args.extend([OsStr::new(&spec), dest.as_os_str()]);
    tool::output("qemu-img", &args).await?;
    Ok(())
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
    fn sniffs_formats_from_headers() {
        let qcow2 = |version: u8, backing: u8, features: u8| {
            let mut h = vec![0u8; 512];
            h[..4].copy_from_slice(b"QFI\xfb");
            h[7] = version;
            h[15] = backing;
            h[79] = features;
            h
        };
        let plain = Sniffed::Qcow2 {
            backing: false,
            data_file: false,
        };
        assert_eq!(sniff(&qcow2(3, 0, 0)), plain);
        assert_eq!(sniff(&qcow2(2, 0, 0b100)), plain, "v2 has no feature bits");
        assert_eq!(
            sniff(&qcow2(3, 0x68, 0)),
            Sniffed::Qcow2 {
                backing: true,
                data_file: false
            }
        );
        assert_eq!(
            sniff(&qcow2(3, 0, 0b100)),
            Sniffed::Qcow2 {
                backing: false,
                data_file: true
            }
        );
        assert_eq!(sniff(&qcow2(1, 0, 0)), Sniffed::Other("qcow"));
        assert_eq!(
            sniff(b"# Disk DescriptorFile\nRW 1 FLAT \"/etc/shadow\" 0"),
            Sniffed::Other("vmdk")
        );
        assert_eq!(sniff(b"KDMV\x01"), Sniffed::Other("vmdk"));
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(b"\x7f\x10\xda\xbe");
        assert_eq!(sniff(&vdi), Sniffed::Other("vdi"));
        assert_eq!(sniff(&[0u8; 512]), Sniffed::Raw);
        assert_eq!(sniff(b""), Sniffed::Raw);
    }

    #[test]
    fn export_formats() {
        assert_eq!(Format::for_export("vhd"), Some(Format::Vhd));
        assert_eq!(Format::Vhd.args()[1], "vpc");
        assert_eq!(Format::for_export("vdi"), None);
    }
}
