module github.com/den-rooms/den

go 1.26.8
