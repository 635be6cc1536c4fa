//! The lookup tables of the Azure mapping: common VM sizes to CPUs and memory, and marketplace
//! images (publisher/offer/sku) to kiln OS ids and public images.

/// Common Azure VM sizes: name, vCPUs, memory in MB.
pub const VM_SIZES: &[(&str, u32, u32)] = &[
    ("Standard_B1s", 1, 1024),
    ("Standard_B1ms", 1, 2048),
    ("Standard_B2s", 2, 4096),
    ("Standard_B2ms", 2, 8192),
    ("Standard_B4ms", 4, 16384),
    ("Standard_A1_v2", 1, 2048),
    ("Standard_A2_v2", 2, 4096),
    ("Standard_A4_v2", 4, 8192),
    ("Standard_D1_v2", 1, 3584),
    ("Standard_D2_v2", 2, 7168),
    ("Standard_D3_v2", 4, 14336),
    ("Standard_DS1_v2", 1, 3584),
    ("Standard_DS2_v2", 2, 7168),
    ("Standard_DS3_v2", 4, 14336),
    ("Standard_D2_v3", 2, 8192),
    ("Standard_D4_v3", 4, 16384),
    ("Standard_D2s_v3", 2, 8192),
    ("Standard_D4s_v3", 4, 16384),
    ("Standard_D8s_v3", 8, 32768),
    ("Standard_D16s_v3", 16, 65536),
    ("Standard_D2s_v4", 2, 8192),
    ("Standard_D4s_v4", 4, 16384),
    ("Standard_D2s_v5", 2, 8192),
    ("Standard_D4s_v5", 4, 16384),
    ("Standard_D8s_v5", 8, 32768),
    ("Standard_D2ds_v5", 2, 8192),
    ("Standard_D2as_v5", 2, 8192),
    ("Standard_D4as_v5", 4, 16384),
    ("Standard_E2s_v3", 2, 16384),
    ("Standard_E4s_v3", 4, 32768),
    ("Standard_F2s_v2", 2, 4096),
    ("Standard_F4s_v2", 4, 8192),
    ("Standard_F8s_v2", 8, 16384),
];

/// The CPUs and memory of an Azure size (case-insensitive, as Azure compares them).
pub fn vm_size(name: &str) -> Option<(u32, u32)> {
    VM_SIZES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, c, m)| (c, m))
}

/// The first size in the table with exactly these CPUs and memory.
pub fn size_for(cpus: u32, memory_mb: u32) -> Option<&'static str> {
    VM_SIZES
        .iter()
        .find(|&&(_, c, m)| c == cpus && m == memory_mb)
        .map(|&(n, _, _)| n)
}

/// Marketplace images: publisher, offer, sku (compared case-insensitively) and the kiln OS id,
/// which is also the name of kiln's public image of it. The first row of an OS id is the one
/// export writes.
pub const PLATFORM_IMAGES: &[(&str, &str, &str, &str)] = &[
    ("Debian", "debian-12", "12", "debian-12"),
    ("Debian", "debian-12", "12-gen2", "debian-12"),
    ("Debian", "debian-13", "13", "debian-13"),
    ("Debian", "debian-13", "13-gen2", "debian-13"),
    ("Debian", "debian-11", "11", "debian-11"),
    ("Debian", "debian-11", "11-gen2", "debian-11"),
    ("Canonical", "UbuntuServer", "18.04-LTS", "ubuntu-18.04"),
    ("Canonical", "UbuntuServer", "16.04-LTS", "ubuntu-16.04"),
    (
        "Canonical",
        "0001-com-ubuntu-server-focal",
        "20_04-lts",
        "ubuntu-20.04",
    ),
    (
        "Canonical",
        "0001-com-ubuntu-server-focal",
        "20_04-lts-gen2",
        "ubuntu-20.04",
    ),
    (
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts",
        "ubuntu-22.04",
    ),
    (
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
        "ubuntu-22.04",
    ),
    ("Canonical", "ubuntu-24_04-lts", "server", "ubuntu-24.04"),
    (
        "Canonical",
        "ubuntu-24_04-lts",
        "server-gen1",
        "ubuntu-24.04",
    ),
];

/// Windows publishers: a source from one of them is refused.
pub const WINDOWS_PUBLISHERS: &[&str] = &[
    "MicrosoftWindowsServer",
    "MicrosoftWindowsDesktop",
    "MicrosoftVisualStudio",
    "MicrosoftSQLServer",
    "MicrosoftWindowsServerHPCPack",
];

/// The kiln OS id of a marketplace image.
pub fn platform_os(publisher: &str, offer: &str, sku: &str) -> Option<&'static str> {
    PLATFORM_IMAGES
        .iter()
        .find(|(p, o, s, _)| {
            p.eq_ignore_ascii_case(publisher)
                && o.eq_ignore_ascii_case(offer)
                && s.eq_ignore_ascii_case(sku)
        })
        .map(|&(_, _, _, os)| os)
}

/// The marketplace image (publisher, offer, sku) of a kiln OS id.
pub fn platform_image(os: &str) -> Option<(&'static str, &'static str, &'static str)> {
    PLATFORM_IMAGES
        .iter()
        .find(|(_, _, _, o)| *o == os)
        .map(|&(p, o, s, _)| (p, o, s))
}
