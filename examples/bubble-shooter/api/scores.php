<?php
// GET: the ten best scores. POST name, score, level: save one score as its
// own file under scores/, so concurrent saves never overwrite each other.
header('Content-Type: application/json');
$dir = dirname(__DIR__) . '/scores';
if (!is_dir($dir)) {
    mkdir($dir, 0775, true);
}
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $name = trim((string)($_POST['name'] ?? ''));
    $score = filter_var($_POST['score'] ?? null, FILTER_VALIDATE_INT, ['options' => ['min_range' => 0, 'max_range' => 10000000]]);
    $level = preg_replace('/[^A-Za-z0-9_-]/', '', (string)($_POST['level'] ?? ''));
    if (!preg_match('/^.{1,20}$/u', $name) || $score === false || $level === '') {
        http_response_code(400);
        echo json_encode(['error' => 'name (1-20 characters), score and level are required']);
        exit;
    }
    $entry = ['name' => $name, 'score' => $score, 'level' => $level, 'at' => gmdate('c')];
    $file = sprintf('%s/%s-%s.json', $dir, gmdate('Ymd\THis'), bin2hex(random_bytes(4)));
    file_put_contents($file . '.tmp', json_encode($entry));
    rename($file . '.tmp', $file);
    http_response_code(201);
    echo json_encode($entry);
    exit;
}
$scores = [];
foreach (glob($dir . '/*.json') as $file) {
    $entry = json_decode((string)file_get_contents($file), true);
    if (is_array($entry)) {
        $scores[] = $entry;
    }
}
usort($scores, fn($a, $b) => $b['score'] <=> $a['score']);
echo json_encode(array_slice($scores, 0, 10));
